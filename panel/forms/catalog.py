"""The catalog pages: upstreams, models and model groups."""

from django import forms

from core.errors import rule_checked
from modelgroups import rules
from modelgroups.models import Model, Upstream
from panel.forms.common import MoneyField, service_name


class UpstreamForm(forms.Form):
    name = forms.CharField(max_length=200)
    kind = forms.ChoiceField(choices=Upstream.Kind.choices, initial=Upstream.Kind.OPENAI)
    base_url = forms.URLField(
        label="Base URL",
        max_length=500,
        assume_scheme="https",
        help_text="OpenAI-compatible, ending in /v1, e.g. https://api.openai.com/v1",
    )
    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: stored encrypted and never shown again.",
    )
    connect_timeout_seconds = forms.FloatField(
        label="Connect timeout (s)", **rules.bounds("connect_timeout_seconds"), initial=5.0
    )
    read_timeout_seconds = forms.FloatField(
        label="Read timeout (s)", **rules.bounds("read_timeout_seconds"), initial=120.0
    )
    enabled = forms.BooleanField(required=False, initial=True)


class UpstreamEditForm(UpstreamForm):
    clear_api_key = forms.BooleanField(
        required=False, label="Remove the stored API key", help_text="Leave the key field empty."
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields[
            "api_key"
        ].help_text = "Write-only. Empty keeps the stored key; anything typed replaces it."

    def clean(self):
        data = super().clean()
        if data.get("clear_api_key") and data.get("api_key"):
            self.add_error("clear_api_key", "Either type a new key or remove it, not both.")
        return data


class CatalogModelForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="What customers put in `model`.")
    upstream = forms.ModelChoiceField(queryset=Upstream.objects.order_by("name"))
    upstream_model = forms.CharField(
        label="Upstream model", max_length=200, help_text="The provider's id for it."
    )
    mode = forms.ChoiceField(choices=Model.Mode.choices, initial=Model.Mode.CHAT)
    input_cost = MoneyField(label="Input cost (USD per 1M tokens)", help_text="What we pay.")
    output_cost = MoneyField(label="Output cost (USD per 1M tokens)")
    input_price = MoneyField(
        label="Input price (credits per 1M tokens)",
        help_text="What customers pay. Empty: the cost times the markup.",
    )
    output_price = MoneyField(
        label="Output price (credits per 1M tokens)", help_text="Empty: the cost times the markup."
    )
    context_window = forms.IntegerField(required=False, **rules.bounds("context_window"))
    max_output_tokens = forms.IntegerField(
        **rules.bounds("max_output_tokens"),
        initial=4096,
        help_text="Reserved per call that sets no max_tokens.",
    )
    enabled = forms.BooleanField(required=False, initial=True)

    def service_fields(self, names=None) -> dict:
        """Fields for model_create/model_update; a blank price stays None (the service fills
        it from the cost), a blank cost is 0."""
        data = {}
        for name, value in self.cleaned_data.items():
            if names is not None and name not in names:
                continue
            if name in ("input_cost", "output_cost") and value is None:
                value = 0
            data[service_name(type(self), name)] = value
        return data

    @classmethod
    def initial_for(cls, model: Model) -> dict:
        return {
            "name": model.name,
            "upstream": model.upstream,
            "upstream_model": model.upstream_model,
            "mode": model.mode,
            "input_cost": model.input_cost_micros,
            "output_cost": model.output_cost_micros,
            "input_price": model.input_price_micros,
            "output_price": model.output_price_micros,
            "context_window": model.context_window,
            "max_output_tokens": model.max_output_tokens,
            "enabled": model.enabled,
        }


class ModelGroupForm(forms.Form):
    name = forms.SlugField(
        max_length=200, help_text="What customers put in `model`: letters, digits, - and _."
    )
    display_name = forms.CharField(label="Display name", max_length=200, required=False)
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), max_length=2000
    )
    cache_ttl_seconds = forms.IntegerField(
        label="Cache answers for (seconds)",
        required=False,
        **rules.bounds("cache_ttl_seconds"),
        help_text="Identical requests to this group are answered from the cache for this long. "
        "Empty: no cache. A team's own setting wins.",
    )


class MemberForm(forms.Form):
    model = forms.ModelChoiceField(
        queryset=Model.objects.order_by("name"), required=False, empty_label="—"
    )
    priority = forms.IntegerField(
        required=False, **rules.bounds("priority"), widget=forms.NumberInput(attrs={"size": 4})
    )
    weight = forms.IntegerField(
        required=False, **rules.bounds("weight"), widget=forms.NumberInput(attrs={"size": 4})
    )


class BaseMemberFormSet(forms.BaseFormSet):
    def members(self) -> list[dict]:
        """The ordered members the service takes: rows without a model or marked for removal
        are dropped; a row without a priority takes its position."""
        members = []
        for position, form in enumerate(self.forms):
            data = form.cleaned_data
            if not data or not data.get("model") or data.get("DELETE"):
                continue
            members.append(
                {
                    "model": data["model"],
                    "priority": position if data.get("priority") is None else data["priority"],
                    "weight": data.get("weight") or 1,
                }
            )
        return sorted(members, key=lambda m: m["priority"])

    def clean(self):
        if not any(self.errors):
            rule_checked(rules.validate_members, self.members(), error=forms.ValidationError)


MemberFormSet = forms.formset_factory(
    MemberForm, formset=BaseMemberFormSet, extra=3, can_delete=True, max_num=50
)
