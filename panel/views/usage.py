"""The usage explorer: filters, totals, a chart, the raw calls and a CSV export."""

import csv
import io
from datetime import UTC, datetime, time, timedelta

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from billing import selectors as billing
from billing.models import USAGE_COUNTS, UsageRecord
from core.money import display_micros, format_micros
from panel import charts, selectors
from panel.forms.usage import UsageFilterForm

CSV_COLUMNS = [
    "created_at",
    "request_id",
    "organization",
    "team",
    "key",
    "model",
    "model_group",
    "status",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "price_credits",
    "latency_ms",
    # Last, so the columns before keep their places for existing readers of the export.
    *USAGE_COUNTS.values(),
]
CSV_CHUNK = 2000


def _range(form) -> tuple[datetime, datetime]:
    """[start of the first day, start of the day after the last) in UTC."""
    start = datetime.combine(form.cleaned_data["start"], time.min, tzinfo=UTC)
    end = datetime.combine(form.cleaned_data["end"], time.min, tzinfo=UTC)
    return start, end + timedelta(days=1)


def _records(scope: dict, start, end):
    return UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end, **scope)


def usage(request):
    data = request.GET.copy()
    # Show the range in effect: the last 30 days unless the filters say otherwise.
    if not data.get("start") and not data.get("end"):
        today = timezone.now().date()
        data["start"] = (today - timedelta(days=29)).isoformat()
        data["end"] = today.isoformat()
    form = UsageFilterForm(data)
    if not form.is_valid():
        return render(request, "panel/usage.html", {"form": form}, status=400)
    scope = form.scope()
    start, end = _range(form)
    if request.GET.get("format") == "csv":
        return _csv(request, scope, start, end)
    by_day = billing.usage_summary(scope=scope, start=start, end=end, group_by="day")
    by_model = billing.usage_summary(scope=scope, start=start, end=end, group_by="model")
    per_day = {row["day"]: row for row in by_day["rows"]}
    days = [(start + timedelta(days=i)).date() for i in range((end - start).days)]
    chart = charts.stacked_bars(
        title="Charged per day (credits)",
        labels=[d.strftime("%b %d") for d in days],
        series=[
            (
                "charged",
                [(per_day.get(d.isoformat()) or {}).get("price_micros", 0) for d in days],
            )
        ],
        fmt=lambda v: display_micros(int(v)),
    )
    calls = _records(scope, start, end).select_related("team", "key", "organization")
    page = selectors.keyset_page(calls, request.GET.get("cursor"))
    query = request.GET.copy()
    query.pop("cursor", None)
    query["format"] = "csv"
    context = {
        "form": form,
        "totals": by_day["totals"],
        "by_model": sorted(by_model["rows"], key=lambda r: -r["price_micros"]),
        "chart": chart,
        "page": page,
        "csv_query": query.urlencode(),
    }
    return render(request, "panel/usage.html", context)


def _csv_rows(records) -> list[list]:
    return [
        [
            r.created_at.isoformat(),
            r.request_id,
            r.organization.public_id,
            r.team.public_id,
            r.key.public_id if r.key else "",
            r.model,
            r.model_group,
            r.status,
            r.input_tokens,
            r.output_tokens,
            format_micros(r.cost_micros),
            format_micros(r.price_micros),
            r.latency_ms if r.latency_ms is not None else "",
            *(getattr(r, column) for column in USAGE_COUNTS.values()),
        ]
        for r in records
    ]


def _chunk(scope, start, end, below: int | None) -> tuple[str, int | None]:
    """One CSV chunk of calls below the id `below`, newest first, and where the next starts."""
    qs = _records(scope, start, end).select_related("team", "key", "organization")
    if below is not None:
        qs = qs.filter(pk__lt=below)
    records = list(qs.order_by("-pk")[:CSV_CHUNK])
    out = io.StringIO()
    csv.writer(out).writerows(_csv_rows(records))
    more = records[-1].pk if len(records) == CSV_CHUNK else None
    return out.getvalue(), more


def _header() -> str:
    out = io.StringIO()
    csv.writer(out).writerow(CSV_COLUMNS)
    return out.getvalue()


def _csv(request, scope, start, end):
    """All matching calls, streamed in keyset chunks: memory stays flat for any range."""

    def rows():
        yield _header()
        below = None
        while True:
            text, below = _chunk(scope, start, end, below)
            yield text
            if below is None:
                return

    async def arows():
        # Under ASGI a synchronous iterator would be drained into memory in a thread first.
        yield _header()
        below = None
        while True:
            text, below = await sync_to_async(_chunk)(scope, start, end, below)
            yield text
            if below is None:
                return

    content = arows() if isinstance(request, ASGIRequest) else rows()
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    filename = f"usage-{start.date().isoformat()}-to-{(end - timedelta(days=1)).date()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
