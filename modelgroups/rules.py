"""What the catalog's settings may be (upstreams, models, model groups): each bound and rule
stated once.

The catalog services enforce them whatever the entry point; the API's serializers and the
panel's forms take these bounds for their fields and call these functions for an early error.
Errors are keyed by the API's field names."""

import re

from core.bounds import INT_MAX, bound_problem
from core.errors import ValidationFailed
from core.money import MAX_MICROS
from modelgroups.models import DEFAULTED_PRICES, Upstream

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


# Every price of a model (micro-units) by model field, and the API's name for it.
PRICE_FIELDS = {
    "input_cost_micros": "input_cost_per_mtok",
    "output_cost_micros": "output_cost_per_mtok",
    "input_price_micros": "input_price_per_mtok",
    "output_price_micros": "output_price_per_mtok",
    **{f: f.replace("_micros", "_per_mtok") for f in DEFAULTED_PRICES},
    "image_cost_micros": "image_cost",
    "image_price_micros": "image_price",
    "audio_second_cost_micros": "audio_cost_per_second",
    "audio_second_price_micros": "audio_price_per_second",
    "character_cost_micros": "character_cost_per_mchar",
    "character_price_micros": "character_price_per_mchar",
}
# A price left out or null takes its cost times the operator's markup (services._fill_prices):
# the price field and its cost field.
MARKED_UP_PRICES = {
    "input_price_micros": "input_cost_micros",
    "output_price_micros": "output_cost_micros",
    "image_price_micros": "image_cost_micros",
    "audio_second_price_micros": "audio_second_cost_micros",
    "character_price_micros": "character_cost_micros",
}
# An image_prices key: a size ("1024x1792", or "auto") and optionally a quality ("hd").
IMAGE_KEY = re.compile(r"^(?:[1-9][0-9]{1,4}x[1-9][0-9]{1,4}|auto)(?:\|[a-z]{1,16})?$")
MAX_IMAGE_PRICES = 32
# Azure's api-version ("2024-10-21", "2025-01-01-preview") and anthropic-version values.
API_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")


def validate_prices(data: dict) -> None:
    """The prices in `data` (model field names) are whole micro-units from 0 to MAX_MICROS;
    None is the service's business (a default) or the column's (nullable or not)."""
    for field, value in data.items():
        if field not in PRICE_FIELDS or value is None:
            continue
        problem = bound_problem(value, 0, MAX_MICROS)
        if problem:
            name = PRICE_FIELDS[field]
            raise ValidationFailed(f"{name}: {problem}", fields={name: [problem]})


def validate_image_prices(table) -> None:
    """Prices per image by size and quality: {"1024x1024|hd": {"cost": micros, "price":
    micros}, "1792x1024": {...}}, at most MAX_IMAGE_PRICES entries."""
    if not isinstance(table, dict):
        _refuse_image_prices('Send an object such as {"1024x1024|hd": {"cost": .., "price": ..}}.')
    if len(table) > MAX_IMAGE_PRICES:
        _refuse_image_prices(f"At most {MAX_IMAGE_PRICES} sizes.")
    for key, value in table.items():
        if not isinstance(key, str) or not IMAGE_KEY.match(key):
            _refuse_image_prices(
                f"{str(key)[:40]!r} is not a size: use WIDTHxHEIGHT or auto, optionally "
                'followed by |quality, e.g. "1024x1024" or "1024x1024|hd".'
            )
        if not isinstance(value, dict) or set(value) != {"cost", "price"}:
            _refuse_image_prices(f"{key}: give exactly a cost and a price.")
        for part in ("cost", "price"):
            problem = bound_problem(value[part], 0, MAX_MICROS)
            if problem:
                _refuse_image_prices(f"{key} {part}: {problem}")


def _refuse_image_prices(message: str):
    raise ValidationFailed(f"image_prices: {message}", fields={"image_prices": [message]})


def validate_api_version(kind: str, api_version: str) -> None:
    """An Azure OpenAI upstream names its api-version; any version is one short token."""
    if kind == Upstream.Kind.AZURE_OPENAI and not api_version:
        message = 'Azure OpenAI needs its api-version, e.g. "2024-10-21".'
        raise ValidationFailed(message, fields={"api_version": [message]})
    if api_version and not API_VERSION.match(api_version):
        message = 'Letters, digits, ".", "-" and "_" only, e.g. "2024-10-21" or "2023-06-01".'
        raise ValidationFailed(f"api_version: {message}", fields={"api_version": [message]})


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
