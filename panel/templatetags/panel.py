"""Template helpers: numbers for people, cache-busted assets, small formatting.

The one way the panel shows a number (never `{{ value }}` or ad-hoc text around it):
- credits:  micro-credits with their unit, "1,234.50 credits"
- usd:      micro-USD with "$", "$0.0042" (our providers' cost)
- count:    tokens, requests, calls: thousands separators, "12,345"
- percent:  a part of a whole, "12%"; pct: a value that is a percentage already, "80%"
- money:    the bare amount ("1,234.50"), only where the unit is said once for many (a chart)
Each shows "—" for none. Amounts keep every significant decimal (core.money.display_micros):
nothing is rounded away."""

import json

from django import template
from django.conf import settings

from core.money import display_micros
from core.static import static_files
from panel.forms import pickers

register = template.Library()


@register.filter
def money(micros, places=2):
    """Micro-units as a grouped decimal ("1,234.50"); an em dash for none."""
    if micros is None or micros == "":
        return "—"
    return display_micros(int(micros), places=int(places))


def credits_text(micros) -> str:
    """12_500_000 -> "12.50 credits"."""
    if micros is None or micros == "":
        return "—"
    return f"{display_micros(int(micros))} credits"


def usd_text(micros) -> str:
    """4_200 -> "$0.0042"; -1_000_000 -> "-$1.00"."""
    if micros is None or micros == "":
        return "—"
    micros = int(micros)
    return f"{'-' if micros < 0 else ''}${display_micros(abs(micros))}"


def count_text(value) -> str:
    """12345 -> "12,345"."""
    if value is None or value == "":
        return "—"
    return f"{int(value):,}"


@register.filter
def credits(micros):
    return credits_text(micros)


@register.filter
def usd(micros):
    return usd_text(micros)


@register.filter
def count(value):
    return count_text(value)


@register.filter
def pct(value):
    """A value that is a percentage already (a threshold of 80) as "80%"."""
    if value is None or value == "":
        return "—"
    return f"{value:g}%" if isinstance(value, float) else f"{value}%"


@register.simple_tag
def asset(path: str) -> str:
    """The URL of a static file with its content hash, so browsers may cache it for good."""
    version = static_files.version(path)
    return f"{settings.STATIC_URL}{path}" + (f"?v={version}" if version else "")


@register.filter
def percent(part, whole):
    """part / whole as a whole percentage; "—" when there is no whole."""
    if not whole:
        return "—"
    return f"{round(100 * (part or 0) / whole)}%"


@register.simple_tag
def picker(kind: str, name: str, value="", id="", empty_label="Any"):
    """An organization, team or key picker for a filter form (panel.forms.pickers)."""
    return pickers.picker(kind, name=name, value=value or "", id=id, empty_label=empty_label)


@register.filter
def get(mapping, key):
    return mapping.get(key) if mapping else None


@register.filter
def pretty_json(value) -> str:
    """A JSON value indented for a <pre> (autoescaped by the template)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
