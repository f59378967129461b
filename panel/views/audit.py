"""The audit log: who did what, when, before and after."""

from django.shortcuts import render

from orgs.models import AuditEvent
from panel import selectors
from panel.views.common import param

FILTERS = ("actor", "action", "object_id", "object_type")


def audit(request):
    events = AuditEvent.objects.select_related("organization")
    values = {name: param(request, name) for name in FILTERS}
    for name, value in values.items():
        if value:
            # "team." finds every team action; the other filters are exact.
            lookup = "action__startswith" if name == "action" else name
            events = events.filter(**{lookup: value})
    org = param(request, "organization", 40)
    if org:
        events = events.filter(organization__public_id=org)
    page = selectors.keyset_page(events, request.GET.get("cursor"))
    return render(
        request, "panel/audit.html", {"page": page, "filters": values, "organization": org}
    )
