"""Template helpers: money for people, cache-busted assets, small formatting."""

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
