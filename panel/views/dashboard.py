"""The dashboard: how the business is doing, at a glance."""

from django.shortcuts import render
from django.utils import timezone

from core.money import display_micros
from panel import call_selectors, charts, litellm, selectors


def _credits(micros) -> str:
    return display_micros(int(micros))


def dashboard(request):
    now = timezone.now()
    data = selectors.dashboard(now=now)
    daily = data["daily"]
    data["daily_chart"] = charts.stacked_bars(
        title="Charged per day, last 30 days (credits)",
        labels=[d.strftime("%b %d") for d, _, _ in daily],
        series=[("Charged", [p for _, p, _ in daily])],
        fmt=_credits,
    )
    data["traffic_chart"] = charts.line(
        title="Requests per minute, last hour",
        labels=[m.strftime("%H:%M") for m, _ in data["per_minute"]],
        values=[n for _, n in data["per_minute"]],
        fmt=lambda v: f"{v:g}",
    )
    data["now"] = now
    data["down_models"] = call_selectors.down_models()
    data["litellm"] = litellm.overview()  # None while the integration is off
    return render(request, "panel/dashboard.html", data)
