"""What the catalog's settings may be (upstreams, models, model groups): each bound and rule
stated once.

The catalog services enforce them whatever the entry point; the API's serializers and the
panel's forms take these bounds for their fields and call these functions for an early error.
Errors are keyed by the API's field names."""

from core.bounds import INT_MAX, bound_problem
from core.errors import ValidationFailed
from modelgroups.models import Upstream

# Inclusive bounds by field name (the same in the API, the panel and the model), and the kind
# of number each is.
BOUNDS = {
    # upstreams
    "connect_timeout_seconds": (0.1, 60, float),
    "read_timeout_seconds": (0.1, 3600, float),
    # models
    "context_window": (1, INT_MAX, int),
    "max_output_tokens": (1, INT_MAX, int),
    # model groups and their members
    "cache_ttl_seconds": (1, 30 * 86400, int),
    "priority": (0, INT_MAX, int),
    "weight": (1, 1000, int),  # a share of traffic among members of equal priority
}


def bounds(field: str) -> dict:
    """min_value/max_value of a catalog setting, for a serializer or form field."""
    low, high, _ = BOUNDS[field]
    return {"min_value": low, "max_value": high}


def validate_numbers(data: dict, *, field_name=None) -> None:
    """The numbers in `data` (model field names) within their bounds; None is the column's
    business (nullable or not)."""
    for field, value in data.items():
        if field not in BOUNDS or value is None:
            continue
        low, high, kind = BOUNDS[field]
        problem = bound_problem(value, low, high, kind=kind)
        if problem:
            name = field_name or field
            raise ValidationFailed(f"{name}: {problem}", fields={name: [problem]})


def validate_key_mode(kind: str, key_mode: str) -> None:
    """Only a LiteLLM upstream can be sent the caller's own virtual key."""
    if key_mode == Upstream.KeyMode.CALLER and kind != Upstream.Kind.LITELLM:
        raise ValidationFailed(
            "Only a LiteLLM upstream knows the callers' virtual keys; use key_mode upstream.",
            fields={"key_mode": ["caller needs kind litellm."]},
        )


def validate_members(members: list[dict]) -> None:
    """A group routes to at least one model, each listed once, priority and weight in bounds."""
    if not members:
        _refuse_members("Pick at least one model.")
    seen = set()
    for member in members:
        model = member["model"]
        if model.pk in seen:
            _refuse_members(f"{model.name} is listed twice.")
        seen.add(model.pk)
        numbers = {k: member[k] for k in ("priority", "weight") if k in member}
        validate_numbers(numbers, field_name="models")


def _refuse_members(message: str):
    raise ValidationFailed(message, fields={"models": [message]})
