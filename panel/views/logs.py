"""The logs page (every call, filtered and paged by keyset) and one call's detail."""

from django.shortcuts import render
from django.utils import timezone

from panel import call_selectors
from panel.forms.logs import LogFilterForm
from panel.middleware import error_page


def logs(request):
    data = LogFilterForm.with_defaults(request.GET, timezone.now())
    form = LogFilterForm(data)
    if not form.is_valid():
        return render(request, "panel/logs.html", {"form": form}, status=400)
    records = call_selectors.call_records(**form.filters())
    page = call_selectors.call_page(
        records,
        older_than=call_selectors.Cursor.parse(request.GET.get("older")),
        newer_than=call_selectors.Cursor.parse(request.GET.get("newer")),
    )
    for call in page.rows:
        call.counts = call_selectors.token_counts(call)
    # The filters in effect (the default range included), for the paging links.
    query = data.copy()
    for name in ("older", "newer"):
        query.pop(name, None)
    paged = bool(request.GET.get("older") or request.GET.get("newer"))
    context = {"form": form, "page": page, "query": query.urlencode(), "paged": paged}
    return render(request, "panel/logs.html", context)


def call_detail(request, request_id):
    detail = call_selectors.call_detail(request_id=request_id.replace("\x00", ""))
    if detail is None:
        return error_page(
            request,
            404,
            f"No call with request id {request_id}. Calls appear once settled (within "
            "seconds); look it up on the logs page.",
        )
    return render(request, "panel/call_detail.html", {"call": detail.record, "detail": detail})
