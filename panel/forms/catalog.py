"""The catalog pages: upstreams, models and model groups."""

from django import forms

from core.errors import rule_checked
from core.money import MoneyError, display_micros, parse_micros
from modelgroups import rules
from modelgroups.models import DEFAULTED_PRICES, Model, Upstream
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
    api_version = forms.CharField(
        label="API version",
        max_length=40,
        required=False,
        help_text="Azure OpenAI: its api-version (required), e.g. 2024-10-21. Anthropic: the "
        "anthropic-version header; empty: 2023-06-01. Unused by the other kinds.",
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
    # "More prices" (a collapsed section): empty = the default, shown as the placeholder.
    cache_read_cost = MoneyField(label="Cost of cached input (USD per 1M tokens)")
    cache_read_price = MoneyField(label="Price of cached input (credits per 1M tokens)")
    cache_write_cost = MoneyField(label="Cost of cache writes (USD per 1M tokens)")
    cache_write_price = MoneyField(label="Price of cache writes (credits per 1M tokens)")
    reasoning_cost = MoneyField(label="Cost of reasoning (USD per 1M tokens)")
    reasoning_price = MoneyField(label="Price of reasoning (credits per 1M tokens)")
    audio_input_cost = MoneyField(label="Cost of audio input (USD per 1M tokens)")
    audio_input_price = MoneyField(label="Price of audio input (credits per 1M tokens)")
    audio_output_cost = MoneyField(label="Cost of audio output (USD per 1M tokens)")
    audio_output_price = MoneyField(label="Price of audio output (credits per 1M tokens)")
    image_cost = MoneyField(label="Image cost (USD per image)")
    image_price = MoneyField(label="Image price (credits per image)")
    image_prices = forms.CharField(
        label="Prices by image size",
        required=False,
        max_length=4000,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "1024x1024|hd 0.08 0.10"}),
        help_text="One size a line: size or size|quality, its cost (USD) and its price "
        "(credits) per image. Other sizes: the image cost and price above.",
    )
    audio_second_cost = MoneyField(label="Audio cost (USD per second)")
    audio_second_price = MoneyField(label="Audio price (credits per second)")
    character_cost = MoneyField(label="Speech input cost (USD per 1M characters)")
    character_price = MoneyField(label="Speech input price (credits per 1M characters)")

    MORE_PRICES = (
        *(f.removesuffix("_micros") for f in DEFAULTED_PRICES),
        "image_cost",
        "image_price",
        "image_prices",
        "audio_second_cost",
        "audio_second_price",
        "character_cost",
        "character_price",
    )
    # Blank costs that are 0 (the others follow the input or output side when blank).
    ZERO_WHEN_BLANK = (
        "input_cost",
        "output_cost",
        "image_cost",
        "audio_second_cost",
        "character_cost",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, follows in DEFAULTED_PRICES.items():
            side = follows.removesuffix("_micros")
            shown = self.initial.get(side)
            text = side.replace("_", " ")
            if shown is not None:
                text += f": {display_micros(shown, places=0, grouping=False)}"
            self.fields[name.removesuffix("_micros")].widget.attrs["placeholder"] = f"= {text}"
        for name in ("image_price", "audio_second_price", "character_price"):
            self.fields[name].widget.attrs["placeholder"] = "cost x markup"

    def main_fields(self):
        return [f for f in self if f.name not in self.MORE_PRICES]

    def more_price_fields(self):
        return [f for f in self if f.name in self.MORE_PRICES]

    def more_prices_open(self) -> bool:
        """Open when one of them is set or refused, so nothing set is hidden."""
        return any(f.errors or _is_set(f.value()) for f in self.more_price_fields())

    def clean_image_prices(self) -> dict:
        """Lines of size, cost and price ("1024x1024|hd 0.08 0.10") into the table the service
        takes: {"1024x1024|hd": {"cost": 80000, "price": 100000}}."""
        table = {}
        for number, line in enumerate(self.cleaned_data["image_prices"].splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 3:
                raise forms.ValidationError(
                    f"Line {number}: a size, a cost and a price, e.g. 1024x1024|hd 0.08 0.10."
                )
            key, cost, price = parts
            try:
                table[key] = {"cost": parse_micros(cost), "price": parse_micros(price)}
            except MoneyError as exc:
                raise forms.ValidationError(f"Line {number}: {exc}") from exc
        return rule_checked(rules.validate_image_prices, table, error=forms.ValidationError)

    def service_fields(self, names=None) -> dict:
        """Fields for model_create/model_update; a blank price stays None (the service fills
        it from the cost, or it follows the input or output side), a blank cost is 0 unless
        it follows a side too."""
        data = {}
        for name, value in self.cleaned_data.items():
            if names is not None and name not in names:
                continue
            if name in self.ZERO_WHEN_BLANK and value is None:
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
            **{
                name: getattr(model, f"{name}_micros")
                for name in CatalogModelForm.MORE_PRICES
                if name != "image_prices"
            },
            "image_prices": "\n".join(
                f"{key} {display_micros(v['cost'], places=0, grouping=False)} "
                f"{display_micros(v['price'], places=0, grouping=False)}"
                for key, v in model.image_prices.items()
            ),
        }


def _is_set(value) -> bool:
    """A price field's value other than empty or zero (an amount or a table's text)."""
    if isinstance(value, str):
        try:
            return parse_micros(value) != 0 if value.strip() else False
        except MoneyError:
            return True  # the table's text, or a typo to show
    return bool(value)


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
