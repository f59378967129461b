"""The team pages: a team's settings (create and edit) and its credits."""

from django import forms

from billing.models import CreditAccount, LedgerEntry
from core.errors import rule_checked
from core.money import MoneyError, display_micros, parse_micros
from modelgroups.models import ModelGroup
from panel.forms.common import (
    MoneyField,
    OrganizationChoice,
    limit_field,
    service_name,
)
from teams import rules
from teams.models import Team
from teams.services import ACCOUNT_FIELDS


class JobPricesField(forms.CharField):
    """{job type: micro-credits} as one "type = price" line each, like the API's
    job_type_prices; which job types may be priced is teams.rules'."""

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
            try:
                prices[name] = parse_micros(price)
            except MoneyError as exc:
                raise forms.ValidationError(f"Line {number}: {exc}") from exc
        return rule_checked(rules.validate_job_types, prices, error=forms.ValidationError)

    def has_changed(self, initial, data):
        try:
            return self.to_python(data) != (initial or {})
        except forms.ValidationError:
            return True


class PatternListField(forms.CharField):
    """Regular expressions, one a line, checked here by teams.rules (as the service checks
    them) so a bad one is a field error, not a gateway error."""

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
        patterns = [line.strip() for line in text.splitlines() if line.strip()]
        return rule_checked(rules.validate_redact_patterns, patterns, error=forms.ValidationError)

    def has_changed(self, initial, data):
        try:
            return self.to_python(data) != (initial or [])
        except forms.ValidationError:
            return True


def _setting(label: str, field: str, **kwargs) -> forms.IntegerField:
    """An integer team setting within its bounds (teams.rules)."""
    return forms.IntegerField(label=label, required=False, **rules.bounds(field), **kwargs)


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
    rpm_limit = limit_field("Requests per minute", rules.bounds("rpm_limit"))
    tpm_limit = limit_field("Tokens per minute", rules.bounds("tpm_limit"))
    max_parallel_requests = limit_field("Parallel requests", rules.bounds("max_parallel_requests"))
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
    tokens_per_unit = _setting(
        "Tokens per unit",
        "tokens_per_unit",
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
    cache_ttl_seconds = _setting(
        "Cache answers for (seconds)",
        "cache_ttl_seconds",
        help_text="Identical requests are answered from the cache. Empty: the model group's "
        "setting; 0: off for this team.",
    )
    cache_hit_price_percent = _setting(
        "Price of a cached answer (%)",
        "cache_hit_price_percent",
        initial=0,
        help_text="Percentage of the normal price charged for an answer from the cache.",
    )
    log_bodies = forms.BooleanField(
        required=False, label="Keep request and response bodies (compliance logging)"
    )
    log_retention_days = _setting("Keep logged bodies for (days)", "log_retention_days", initial=30)
    log_redact_patterns = PatternListField(
        label="Redact from logged bodies",
        help_text="Regular expressions, one a line; matches are replaced before storing.",
    )

    def clean_alert_thresholds(self):
        raw = self.cleaned_data["alert_thresholds"].replace(";", ",")
        try:
            return [int(part) for part in raw.split(",") if part.strip()]
        except ValueError:
            raise forms.ValidationError("Whole percentages, such as 80, 100.") from None

    def service_fields(self, names=None) -> tuple[dict, list | None]:
        """(fields for team_create/team_update, model groups or None); `names` limits the
        fields to those given (an edit sends only what changed, like the API's PATCH).

        A blank field is the column's null, or its default where it cannot be null (the pricing
        mode, the cache price, the log retention, the overdraft limit)."""
        data = {}
        groups = None
        for name, value in self.cleaned_data.items():
            if names is not None and name not in names:
                continue
            if name == "model_groups":
                groups = list(value)
                continue
            field = service_name(type(self), name)
            if value is None or value == "":
                column = _column(field)
                value = None if column.null else column.get_default()
            data[field] = value
        return data, groups

    @classmethod
    def initial_for(cls, team: Team) -> dict:
        initial = {
            name: getattr(team.account if field in ACCOUNT_FIELDS else team, field)
            for name in cls.base_fields
            if (field := service_name(cls, name)) not in ("model_groups", "alert_thresholds")
        }
        initial["external_id"] = team.external_id or ""
        initial["model_groups"] = list(team.model_groups.all())
        initial["alert_thresholds"] = ", ".join(str(t) for t in team.alert_thresholds)
        return initial


def _column(field: str):
    """The model field a team setting is stored in (the overdraft limit is the account's)."""
    return (CreditAccount if field in ACCOUNT_FIELDS else Team)._meta.get_field(field)


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
