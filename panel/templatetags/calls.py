"""Template helpers of the logs, call and model health pages."""

from django import template

register = template.Library()

# modelgroups.ModelHealth statuses as the panel's badge colours.
HEALTH_BADGES = {"up": "ok", "degraded": "warning", "down": "error"}


@register.filter
def grouped(count):
    """A count of tokens, images, milliseconds... with thousands separators: 12,345."""
    if count is None or count == "":
        return "—"
    return f"{int(count):,}"


@register.filter
def health_badge(status) -> str:
    return HEALTH_BADGES.get(status or "", "")
