"""Template helpers of the logs, call and model pages (numbers: panel count, credits, usd)."""

from django import template

register = template.Library()

# modelgroups.ModelHealth statuses as the panel's badge colours.
HEALTH_BADGES = {"up": "ok", "degraded": "warning", "down": "error"}


@register.filter
def health_badge(status) -> str:
    return HEALTH_BADGES.get(status or "", "")
