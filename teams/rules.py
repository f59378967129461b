"""What a team's settings may be: each bound and rule stated once.

team_create and team_update enforce them whatever the entry point (the API, the panel, a
command, an importer), so the gateway can trust what it reads back (it compiles the saved
redaction patterns without a guard). The API's serializers and the panel's forms only parse;
where they want an error early, next to its field, they call these same functions or take
these bounds. Errors are keyed by the API's field names (`budget_limit`, not
`budget_limit_micros`), which are also the panel's."""

import re

from core.bounds import INT_MAX, JOB_TYPE_RE, bound_problem
from core.errors import ValidationFailed
from core.money import MAX_MICROS
from teams.models import Team, VirtualKey

__all__ = ["JOB_TYPE_RE"]  # the gateway's definition too: it lives in core.bounds

CACHE_TTL_SECONDS_MAX = 30 * 86400
KEY_GRACE_SECONDS_MAX = 30 * 86400  # how long a rotated key's old secret may keep working
ALERT_THRESHOLDS_MAX = 10
ALERT_THRESHOLD_RANGE = (1, 1000)  # percent of the period budget
JOB_TYPES_MAX = 200
REDACT_PATTERNS_MAX = 50
REDACT_PATTERN_LENGTH_MAX = 500

# Inclusive bounds of the integer settings, by field name (the same in the API and the model).
INTEGER_BOUNDS = {
    "rpm_limit": (1, INT_MAX),
    "tpm_limit": (1, INT_MAX),
    "max_parallel_requests": (1, INT_MAX),
    "tokens_per_unit": (1, INT_MAX),
    "cache_ttl_seconds": (0, CACHE_TTL_SECONDS_MAX),
    "cache_hit_price_percent": (0, 100),
    "log_retention_days": (1, 3650),
}
# Money settings: micro-credits, never negative (a CHECK constraint backs most of them).
AMOUNT_FIELDS = (
    "budget_limit_micros",
    "allowance_micros",
    "low_balance_alert_micros",
    "overdraft_limit_micros",
    "credits_per_usd_micros",
    "price_per_unit_micros",
    "job_price_micros",
)
# The parameters each pricing mode charges by: model field -> API field.
PRICING_PARAMETERS = {
    Team.PricingMode.COST_MARKUP: {"credits_per_usd_micros": "credits_per_usd"},
    Team.PricingMode.PER_TOKENS: {
        "tokens_per_unit": "tokens_per_unit",
        "price_per_unit_micros": "price_per_unit",
    },
    Team.PricingMode.PER_JOB: {"job_price_micros": "job_price"},
}


def bounds(field: str) -> dict:
    """min_value/max_value of an integer setting, for a serializer or form field."""
    low, high = INTEGER_BOUNDS[field]
    return {"min_value": low, "max_value": high}


def api_name(field: str) -> str:
    return field.removesuffix("_micros")


def _refuse(field: str, message: str, summary: str | None = None):
    raise ValidationFailed(summary or message, fields={api_name(field): [message]})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_integers(data: dict, *, model=Team) -> None:
    for field, (low, high) in INTEGER_BOUNDS.items():
        if field not in data:
            continue
        value = data[field]
        if value is None:
            if not model._meta.get_field(field).null:
                _refuse(field, "This field may not be null.")
        elif problem := bound_problem(value, low, high):
            _refuse(field, problem)


def validate_amounts(data: dict) -> None:
    for field in AMOUNT_FIELDS:
        value = data.get(field)
        if value is None:
            continue
        if not _is_int(value) or not 0 <= value <= MAX_MICROS:
            _refuse(field, "Not an amount: a whole number of micro-credits, not negative.")


def validate_alert_thresholds(thresholds) -> None:
    """At most ALERT_THRESHOLDS_MAX percentages of the budget, each within the range."""
    if not isinstance(thresholds, list) or not all(_is_int(t) for t in thresholds):
        _refuse("alert_thresholds", "Whole percentages, such as 80, 100.")
    if len(thresholds) > ALERT_THRESHOLDS_MAX:
        _refuse("alert_thresholds", f"At most {ALERT_THRESHOLDS_MAX} thresholds.")
    low, high = ALERT_THRESHOLD_RANGE
    if any(not low <= t <= high for t in thresholds):
        _refuse(
            "alert_thresholds",
            "Out of range.",
            summary=f"Alert thresholds are percentages between {low} and {high}.",
        )


def job_type_problem(job_type) -> str | None:
    """Why `job_type` cannot name a job, or None."""
    if isinstance(job_type, str) and JOB_TYPE_RE.match(job_type):
        return None
    return f"{str(job_type)[:100]!r} is not a job type (letters, digits, _ . : -)."


def validate_job_types(job_types) -> None:
    """The job types a team prices: at most JOB_TYPES_MAX, each a job type name."""
    if len(job_types) > JOB_TYPES_MAX:
        _refuse("job_type_prices", f"At most {JOB_TYPES_MAX} job types.")
    for job_type in job_types:
        problem = job_type_problem(job_type)
        if problem:
            _refuse("job_type_prices", problem)


def validate_job_prices(prices) -> None:
    """{job type: micro-credits}: valid job types, each priced at an amount."""
    if not isinstance(prices, dict):
        _refuse("job_type_prices", "A map of job type to price.")
    validate_job_types(prices)
    for job_type, price in prices.items():
        if not _is_int(price) or not 0 <= price <= MAX_MICROS:
            _refuse("job_type_prices", f"Price of {job_type}: not an amount of micro-credits.")


def redact_pattern_problem(pattern) -> str | None:
    """Why the gateway could not redact logged bodies with `pattern`, or None; said as the
    end of a sentence whose subject is the pattern ("… matches empty text.")."""
    if not isinstance(pattern, str):
        return "is not text."
    if len(pattern) > REDACT_PATTERN_LENGTH_MAX:
        return f"is longer than {REDACT_PATTERN_LENGTH_MAX} characters."
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return f"is not a valid regular expression: {exc}."
    if compiled.match(""):
        # It would "redact" between every two characters, and match everywhere.
        return "matches empty text."
    return None


def validate_redact_patterns(patterns) -> None:
    """Each pattern compiles and matches something; at most REDACT_PATTERNS_MAX of them."""
    if not isinstance(patterns, list):
        _refuse("log_redact_patterns", "A list of regular expressions.")
    if len(patterns) > REDACT_PATTERNS_MAX:
        _refuse("log_redact_patterns", f"At most {REDACT_PATTERNS_MAX} patterns.")
    if any(isinstance(p, str) and "\x00" in p for p in patterns):
        # Postgres refuses it in jsonb: a field error, not a 500.
        _refuse("log_redact_patterns", "Patterns may not contain NUL characters.")
    for number, pattern in enumerate(patterns, start=1):
        problem = redact_pattern_problem(pattern)
        if problem:
            _refuse("log_redact_patterns", f"Pattern {number} {problem}")


def validate_budget(data: dict, team: Team | None = None) -> None:
    """A recurring allowance needs a period to recur on; checked against the team as it will be."""
    period = data.get("budget_period", team.budget_period if team else Team.BudgetPeriod.NONE)
    allowance = data.get("allowance_micros", team.allowance_micros if team else None)
    if allowance and period == Team.BudgetPeriod.NONE:
        raise ValidationFailed(
            "A recurring allowance needs a budget period to recur on.",
            fields={"allowance": ["Set budget_period to daily, weekly or monthly."]},
        )


def validate_pricing(data: dict, team: Team | None = None) -> None:
    """Each pricing mode needs its parameters; checked against the team as it will be."""

    def final(field):
        return data[field] if field in data else getattr(team, field, None)

    mode = final("pricing_mode") or Team.PricingMode.MODEL_PRICES
    missing = {
        api: [f"Required when pricing_mode is {mode}."]
        for field, api in PRICING_PARAMETERS.get(mode, {}).items()
        if final(field) is None
    }
    if missing:
        raise ValidationFailed(f"Pricing mode {mode} needs {', '.join(missing)}.", fields=missing)


def validate_team(data: dict, *, team: Team | None = None) -> None:
    """Every rule on a team's settings: `data` holds model field names (all of a new team's
    fields, or the changed ones with `team` as it is now)."""
    validate_integers(data)
    validate_amounts(data)
    if "alert_thresholds" in data:
        validate_alert_thresholds(data["alert_thresholds"])
    if "job_type_prices" in data:
        validate_job_prices(data["job_type_prices"])
    if "log_redact_patterns" in data:
        validate_redact_patterns(data["log_redact_patterns"])
    validate_budget(data, team)
    validate_pricing(data, team)


def validate_key(data: dict) -> None:
    """A virtual key's own limits (model field names): the same bounds as its team's."""
    validate_integers(data, model=VirtualKey)
    validate_amounts(data)


def validate_grace_seconds(grace_seconds) -> None:
    problem = bound_problem(grace_seconds, 0, KEY_GRACE_SECONDS_MAX)
    if problem:
        _refuse("grace_period_seconds", problem)
