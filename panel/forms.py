"""Panel forms: they only parse and validate input; every write goes through a service.

Field names follow the admin API's (amount, budget_limit, overdraft_limit…), so the field
errors services raise land next to the field they are about."""

import re
import uuid
from datetime import timedelta

from django import forms
from django.core.validators import URLValidator
from django.utils import timezone

from billing.models import LedgerEntry
from core.errors import ServiceError
from core.fields import INT_MAX, JOB_TYPE_RE
from core.money import MoneyError, display_micros, parse_micros
from modelgroups.models import Model, ModelGroup, Upstream
from orgs.models import Organization
from teams.models import Team, VirtualKey


class MoneyField(forms.Field):
    """A decimal string in the form, integer micro-units in cleaned_data (None when blank)."""

    widget = forms.TextInput
    MAX_LENGTH = 40

    def __init__(self, *, allow_negative: bool = False, **kwargs):
        self.allow_negative = allow_negative
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.widget.attrs.update(
            inputmode="decimal", autocomplete="off", placeholder="0.00", maxlength=self.MAX_LENGTH
        )

    def prepare_value(self, value):
        if isinstance(value, int):
            return display_micros(value, places=0, grouping=False)
        return value

    def to_python(self, value):
        value = (value or "").strip() if isinstance(value, str | type(None)) else value
        if value in self.empty_values:
            return None
        if len(str(value)) > self.MAX_LENGTH:
            raise forms.ValidationError("That is not an amount.")
        try:
            return parse_micros(value, allow_negative=self.allow_negative)
        except MoneyError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def has_changed(self, initial, data):
        try:
            return self.to_python(data) != initial
        except forms.ValidationError:
            return True


def limit_field(label: str, help_text: str = "Empty: unlimited.") -> forms.IntegerField:
    return forms.IntegerField(
        label=label, required=False, min_value=1, max_value=INT_MAX, help_text=help_text
    )


class JobPricesField(forms.CharField):
    """{job type: micro-credits} as one "type = price" line each, like the API's
    job_type_prices (at most 200 types; the same job type rule)."""

    MAX_TYPES = 200

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}))
        kwargs.setdefault("max_length", 20_000)
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, dict):
            return "\n".join(
                f"{name} = {display_micros(price, places=0, grouping=False)}"
                for name, price in value.items()
            )
        return value

    def to_python(self, value):
        text = super().to_python(value)
        prices = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            name, sep, price = line.partition("=")
            name, price = name.strip(), price.strip()
            if not sep or not price:
                raise forms.ValidationError(f"Line {number}: write it as type = price.")
            if not JOB_TYPE_RE.match(name):
                raise forms.ValidationError(
                    f"Line {number}: {name[:100]!r} is not a job type (letters, digits, _ . : -)."
                )
            try:
                prices[name] = parse_micros(price)
            except MoneyError as exc:
                raise forms.ValidationError(f"Line {number}: {exc}") from exc
        if len(prices) > self.MAX_TYPES:
            raise forms.ValidationError(f"At most {self.MAX_TYPES} job types.")
        return prices

    def has_changed(self, initial, data):
        try:
            return self.to_python(data) != (initial or {})
        except forms.ValidationError:
            return True


class PatternListField(forms.CharField):
    """Regular expressions, one a line, each compiled here (as the API does) so a bad one is
    a field error, not a gateway error."""

    MAX_PATTERNS = 50

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}))
        kwargs.setdefault("max_length", 30_000)
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        text = super().to_python(value)
        if "\x00" in text:  # Postgres refuses it in jsonb: a field error, not a 500
            raise forms.ValidationError("Patterns may not contain NUL characters.")
        patterns = [line.strip() for line in text.splitlines() if line.strip()]
        if len(patterns) > self.MAX_PATTERNS:
            raise forms.ValidationError(f"At most {self.MAX_PATTERNS} patterns.")
        for number, pattern in enumerate(patterns, start=1):
            if len(pattern) > 500:
                raise forms.ValidationError(f"Pattern {number} is longer than 500 characters.")
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise forms.ValidationError(
                    f"Pattern {number} is not a valid regular expression: {exc}."
                ) from None
            if compiled.match(""):
                raise forms.ValidationError(f"Pattern {number} matches empty text.")
        return patterns

    def has_changed(self, initial, data):
        try:
            return self.to_python(data) != (initial or [])
        except forms.ValidationError:
            return True


def service_error_to_form(form: forms.Form, exc: ServiceError) -> None:
    """Show a service's refusal on the form: its field errors next to their fields, and its
    message at the top."""
    form.add_error(None, exc.message)
    for field, messages in exc.fields.items():
        if field in form.fields:
            for message in messages if isinstance(messages, list) else [messages]:
                form.add_error(field, message)


def new_idempotency_key() -> str:
    """One per rendered form: a double submit of the same form posts once."""
    return uuid.uuid4().hex


class OrganizationForm(forms.Form):
    name = forms.CharField(max_length=200)
    external_id = forms.CharField(
        label="External id",
        max_length=200,
        required=False,
        help_text="Your own id for this customer (CRM, billing). Optional; unique.",
    )

    def service_fields(self) -> dict:
        data = dict(self.cleaned_data)
        data["external_id"] = data["external_id"] or None
        return data


class OrganizationEditForm(OrganizationForm):
    status = forms.ChoiceField(choices=Organization.Status.choices)


class TeamForm(forms.Form):
    name = forms.CharField(max_length=200)
    external_id = forms.CharField(label="External id", max_length=200, required=False)
    model_groups = forms.ModelMultipleChoiceField(
        queryset=ModelGroup.objects.order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Model groups",
        help_text="What the team's keys may call.",
    )
    rpm_limit = limit_field("Requests per minute")
    tpm_limit = limit_field("Tokens per minute")
    max_parallel_requests = limit_field("Parallel requests")
    budget_period = forms.ChoiceField(choices=Team.BudgetPeriod.choices, initial="none")
    budget_limit = MoneyField(
        label="Budget per period (credits)", help_text="Empty: no period budget."
    )
    budget_mode = forms.ChoiceField(
        choices=Team.LimitMode.choices,
        initial="hard",
        help_text="Hard refuses calls past the budget; soft lets them through and alerts.",
    )
    alert_thresholds = forms.CharField(
        required=False,
        initial="80, 100",
        help_text="Percentages of the budget that alert, comma separated.",
    )
    allowance = MoneyField(
        label="Allowance per period (credits)",
        help_text="Credited at each period start. Needs a budget period.",
    )
    allowance_rollover = forms.BooleanField(
        required=False, label="Unused allowance rolls over to the next period"
    )
    overdraft_limit = MoneyField(
        label="Overdraft limit (credits)",
        help_text="How far below zero an invoiced customer may go. 0 for prepaid.",
    )
    low_balance_alert = MoneyField(
        label="Low balance alert (credits)",
        help_text="Alert once per period when the balance falls below this. Empty: never.",
    )
    pricing_mode = forms.ChoiceField(
        choices=Team.PricingMode.choices,
        required=False,
        initial=Team.PricingMode.MODEL_PRICES,
        label="Pricing mode",
        help_text="How calls are charged. Each mode uses only its own parameters below.",
    )
    credits_per_usd = MoneyField(
        label="Credits per USD of cost", help_text="Cost markup: provider cost times this rate."
    )
    tokens_per_unit = forms.IntegerField(
        label="Tokens per unit",
        required=False,
        min_value=1,
        max_value=INT_MAX,
        help_text="Per tokens: input + output tokens are billed in units of this many.",
    )
    price_per_unit = MoneyField(label="Price per unit (credits)", help_text="Per tokens.")
    job_price = MoneyField(
        label="Job price (credits)", help_text="Per job: charged once per completed job."
    )
    job_type_prices = JobPricesField(
        label="Prices by job type",
        help_text="Per job: one “type = price” a line, e.g. translate = 2.00. Other types pay "
        "the job price.",
    )
    cache_ttl_seconds = forms.IntegerField(
        label="Cache answers for (seconds)",
        required=False,
        min_value=0,
        max_value=30 * 86400,
        help_text="Identical requests are answered from the cache. Empty: the model group's "
        "setting; 0: off for this team.",
    )
    cache_hit_price_percent = forms.IntegerField(
        label="Price of a cached answer (%)",
        required=False,
        min_value=0,
        max_value=100,
        initial=0,
        help_text="Percentage of the normal price charged for an answer from the cache.",
    )
    log_bodies = forms.BooleanField(
        required=False, label="Keep request and response bodies (compliance logging)"
    )
    log_retention_days = forms.IntegerField(
        label="Keep logged bodies for (days)",
        required=False,
        min_value=1,
        max_value=3650,
        initial=30,
    )
    log_redact_patterns = PatternListField(
        label="Redact from logged bodies",
        help_text="Regular expressions, one a line; matches are replaced before storing.",
    )

    # Form field -> the name the service and model use.
    RENAMED = {
        "budget_limit": "budget_limit_micros",
        "allowance": "allowance_micros",
        "overdraft_limit": "overdraft_limit_micros",
        "low_balance_alert": "low_balance_alert_micros",
        "credits_per_usd": "credits_per_usd_micros",
        "price_per_unit": "price_per_unit_micros",
        "job_price": "job_price_micros",
    }
    # Columns that cannot be empty: a blank field means the default.
    DEFAULTS = {
        "pricing_mode": Team.PricingMode.MODEL_PRICES,
        "cache_hit_price_percent": 0,
        "log_retention_days": 30,
    }

    def clean_alert_thresholds(self):
        raw = self.cleaned_data["alert_thresholds"].replace(";", ",")
        try:
            values = [int(part) for part in raw.split(",") if part.strip()]
        except ValueError:
            raise forms.ValidationError("Whole percentages, such as 80, 100.") from None
        if len(values) > 10:
            raise forms.ValidationError("At most 10 thresholds.")
        return values

    def service_fields(self, names=None) -> tuple[dict, list | None]:
        """(fields for team_create/team_update, model groups or None); `names` limits the
        fields to those given (an edit sends only what changed, like the API's PATCH)."""
        data = {}
        groups = None
        for name, value in self.cleaned_data.items():
            if names is not None and name not in names:
                continue
            if name == "model_groups":
                groups = list(value)
                continue
            if name == "external_id":
                value = value or None
            if name == "overdraft_limit" and value is None:
                value = 0
            if value in (None, "") and name in self.DEFAULTS:
                value = self.DEFAULTS[name]
            data[self.RENAMED.get(name, name)] = value
        return data, groups

    @classmethod
    def initial_for(cls, team: Team) -> dict:
        return {
            "name": team.name,
            "external_id": team.external_id or "",
            "model_groups": list(team.model_groups.all()),
            "rpm_limit": team.rpm_limit,
            "tpm_limit": team.tpm_limit,
            "max_parallel_requests": team.max_parallel_requests,
            "budget_period": team.budget_period,
            "budget_limit": team.budget_limit_micros,
            "budget_mode": team.budget_mode,
            "alert_thresholds": ", ".join(str(t) for t in team.alert_thresholds),
            "allowance": team.allowance_micros,
            "allowance_rollover": team.allowance_rollover,
            "overdraft_limit": team.account.overdraft_limit_micros,
            "low_balance_alert": team.low_balance_alert_micros,
            "pricing_mode": team.pricing_mode,
            "credits_per_usd": team.credits_per_usd_micros,
            "tokens_per_unit": team.tokens_per_unit,
            "price_per_unit": team.price_per_unit_micros,
            "job_price": team.job_price_micros,
            "job_type_prices": team.job_type_prices,
            "cache_ttl_seconds": team.cache_ttl_seconds,
            "cache_hit_price_percent": team.cache_hit_price_percent,
            "log_bodies": team.log_bodies,
            "log_retention_days": team.log_retention_days,
            "log_redact_patterns": team.log_redact_patterns,
        }


class OrganizationChoice(forms.Form):
    """An `organization` field given by public id, cleaned to the Organization."""

    organization = forms.CharField(
        max_length=40,
        help_text="The organization's id (org_…). Easiest from the organization's page.",
    )

    def clean_organization(self):
        public_id = self.cleaned_data["organization"].strip()
        org = Organization.objects.filter(public_id=public_id).first()
        if org is None:
            raise forms.ValidationError(f"No organization with id {public_id}.")
        return org


class TeamCreateForm(OrganizationChoice, TeamForm):
    field_order = ["organization", "name"]

    def service_fields(self, names=None):
        data, groups = super().service_fields(names)
        data.pop("organization", None)
        return data, groups


class CreditForm(forms.Form):
    kind = forms.ChoiceField(
        choices=[
            (LedgerEntry.Kind.GRANT, "Grant (add prepaid credits)"),
            (LedgerEntry.Kind.ADJUSTMENT, "Adjust (correct up or down)"),
        ],
        initial=LedgerEntry.Kind.GRANT,
        widget=forms.RadioSelect,
    )
    amount = MoneyField(
        allow_negative=True,
        required=True,
        label="Amount (credits)",
        help_text="A decimal such as 25.00; an adjustment may be negative.",
    )
    reason = forms.CharField(
        max_length=500, help_text="Shown in the ledger and the audit log: an invoice, a ticket."
    )
    idempotency_key = forms.CharField(max_length=100, widget=forms.HiddenInput)


class KeyForm(forms.Form):
    name = forms.CharField(max_length=200)
    expires_at = forms.DateTimeField(
        label="Expires at (UTC)",
        required=False,
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Empty: never expires.",
    )
    model_groups = forms.ModelMultipleChoiceField(
        queryset=ModelGroup.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Restrict to model groups",
        help_text="None ticked: everything the team may use.",
    )
    rpm_limit = limit_field("Requests per minute", "Empty: only the team's limit applies.")
    tpm_limit = limit_field("Tokens per minute", "Empty: only the team's limit applies.")
    budget_limit = MoneyField(
        label="Lifetime budget (credits)", help_text="Empty: bounded only by the team."
    )

    def __init__(self, *args, team: Team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model_groups"].queryset = team.model_groups.order_by("name")

    def service_fields(self) -> tuple[dict, list]:
        data = dict(self.cleaned_data)
        groups = list(data.pop("model_groups"))
        data["budget_limit_micros"] = data.pop("budget_limit")
        if data["expires_at"] is None:
            data.pop("expires_at")
        return data, groups


GRACE_CHOICES = [
    (0, "None: the old secret stops now"),
    (3600, "1 hour"),
    (86400, "24 hours"),
    (7 * 86400, "7 days"),
]


class RotateForm(forms.Form):
    grace_period_seconds = forms.TypedChoiceField(
        label="The old secret keeps working for",
        choices=GRACE_CHOICES,
        coerce=int,
        initial=3600,
    )


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
        label="Connect timeout (s)", min_value=0.1, max_value=60, initial=5.0
    )
    read_timeout_seconds = forms.FloatField(
        label="Read timeout (s)", min_value=0.1, max_value=3600, initial=120.0
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
    context_window = forms.IntegerField(required=False, min_value=1, max_value=INT_MAX)
    max_output_tokens = forms.IntegerField(
        min_value=1,
        max_value=INT_MAX,
        initial=4096,
        help_text="Reserved per call that sets no max_tokens.",
    )
    enabled = forms.BooleanField(required=False, initial=True)

    RENAMED = {
        "input_cost": "input_cost_micros",
        "output_cost": "output_cost_micros",
        "input_price": "input_price_micros",
        "output_price": "output_price_micros",
    }

    def service_fields(self, names=None) -> dict:
        data = {}
        for name, value in self.cleaned_data.items():
            if names is not None and name not in names:
                continue
            if name in ("input_cost", "output_cost") and value is None:
                value = 0
            data[self.RENAMED.get(name, name)] = value
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
        min_value=1,
        max_value=30 * 86400,
        help_text="Identical requests to this group are answered from the cache for this long. "
        "Empty: no cache. A team's own setting wins.",
    )


class MemberForm(forms.Form):
    model = forms.ModelChoiceField(
        queryset=Model.objects.order_by("name"), required=False, empty_label="—"
    )
    priority = forms.IntegerField(
        required=False, min_value=0, max_value=INT_MAX, widget=forms.NumberInput(attrs={"size": 4})
    )
    weight = forms.IntegerField(
        required=False, min_value=1, max_value=1000, widget=forms.NumberInput(attrs={"size": 4})
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
        if any(self.errors):
            return
        seen = set()
        for member in self.members():
            if member["model"].pk in seen:
                raise forms.ValidationError(f"{member['model'].name} is listed twice.")
            seen.add(member["model"].pk)
        if not seen:
            raise forms.ValidationError("Pick at least one model.")


MemberFormSet = forms.formset_factory(
    MemberForm, formset=BaseMemberFormSet, extra=3, can_delete=True, max_num=50
)


class UsageFilterForm(forms.Form):
    organization = forms.CharField(required=False, max_length=40, label="Organization id")
    team = forms.CharField(required=False, max_length=40, label="Team id")
    key = forms.CharField(required=False, max_length=40, label="Key id")
    model = forms.CharField(required=False, max_length=200)
    status = forms.ChoiceField(
        required=False, choices=[("", "Any")], label="Status"
    )  # choices set below, from the model
    start = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), label="From (UTC)"
    )
    end = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), label="To (UTC)"
    )

    MAX_DAYS = 366

    def __init__(self, *args, **kwargs):
        from billing.models import UsageRecord

        super().__init__(*args, **kwargs)
        self.fields["status"].choices = [("", "Any"), *UsageRecord.Status.choices]

    def _lookup(self, name, model, label):
        public_id = self.cleaned_data[name].strip()
        if not public_id:
            return None
        obj = model.objects.filter(public_id=public_id).first()
        if obj is None:
            raise forms.ValidationError(f"No {label} with id {public_id}.")
        return obj

    def clean_organization(self):
        return self._lookup("organization", Organization, "organization")

    def clean_team(self):
        return self._lookup("team", Team, "team")

    def clean_key(self):
        return self._lookup("key", VirtualKey, "key")

    def clean(self):
        data = super().clean()
        today = timezone.now().date()
        end = data.get("end") or today
        start = data.get("start") or end - timedelta(days=29)
        if start > end:
            self.add_error("start", "Must not be after the end date.")
        elif (end - start).days >= self.MAX_DAYS:
            self.add_error("start", f"The range is at most {self.MAX_DAYS} days.")
        data["start"], data["end"] = start, end
        return data

    def scope(self) -> dict:
        """Filters for billing.selectors.usage_summary and the raw calls."""
        scope = {}
        for name in ("organization", "team", "key"):
            if self.cleaned_data.get(name) is not None:
                scope[name] = self.cleaned_data[name]
        if self.cleaned_data.get("model"):
            scope["model"] = self.cleaned_data["model"].strip()
        if self.cleaned_data.get("status"):
            scope["status"] = self.cleaned_data["status"]
        return scope


class WebhookForm(forms.Form):
    url = forms.URLField(
        label="URL",
        max_length=500,
        assume_scheme="https",
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="Alerts are POSTed here as JSON, signed with the endpoint's secret.",
    )
    description = forms.CharField(max_length=200, required=False)
    enabled = forms.BooleanField(required=False, initial=True)


class WebhookCreateForm(OrganizationChoice, WebhookForm):
    field_order = ["organization", "url"]


class PlaygroundForm(forms.Form):
    team = forms.CharField(max_length=40, widget=forms.HiddenInput)
    model_group = forms.ModelChoiceField(
        queryset=ModelGroup.objects.none(),
        label="Model group",
        empty_label=None,
        help_text="One of the team's model groups: what a customer puts in the model field.",
    )
    system = forms.CharField(
        label="System prompt",
        required=False,
        max_length=4000,
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    prompt = forms.CharField(max_length=8000, widget=forms.Textarea(attrs={"rows": 4}))
    max_tokens = forms.IntegerField(
        label="Max tokens",
        min_value=1,
        max_value=4096,
        initial=256,
        help_text="Caps the answer, and what admission reserves from the credits meanwhile.",
    )

    def __init__(self, *args, team: Team | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.team = team
        if team is not None:
            self.fields["model_group"].queryset = team.model_groups.order_by("name")

    def clean_team(self):
        if self.team is None or self.team.public_id != self.cleaned_data["team"]:
            raise forms.ValidationError("Pick a team first.")
        if self.team.status != Team.Status.ACTIVE:
            raise forms.ValidationError(
                f"This team is {self.team.status}: the gateway refuses its calls. Resume it first."
            )
        return self.team

    def chat_messages(self) -> list[dict]:
        """The chat messages to send."""
        messages = []
        if self.cleaned_data["system"].strip():
            messages.append({"role": "system", "content": self.cleaned_data["system"]})
        messages.append({"role": "user", "content": self.cleaned_data["prompt"]})
        return messages
