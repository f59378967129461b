"""Organizations: list, create, detail (with its teams), edit, delete."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.errors import ServiceError
from orgs import services
from orgs.models import Organization
from panel import selectors
from panel.forms.common import service_error_to_form
from panel.forms.orgs import OrganizationEditForm, OrganizationForm
from panel.views.common import actor, by_public_id, param
from teams.models import Team


def org_list(request):
    q = param(request, "q")
    orgs = Organization.objects.all()
    if q:
        orgs = (
            orgs.filter(name__icontains=q) | orgs.filter(public_id=q) | orgs.filter(external_id=q)
        )
    page = selectors.keyset_page(orgs, request.GET.get("cursor"))
    return render(request, "panel/org_list.html", {"page": page, "q": q})


def org_create(request):
    form = OrganizationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            org, created = services.organization_create(
                actor=actor(request), **form.service_fields()
            )
        except ServiceError as exc:
            service_error_to_form(form, exc)
        else:
            if created:
                messages.success(request, f"Organization {org.name} created.")
            else:
                messages.info(request, f"{org.name} already had that external id; nothing new.")
            return redirect("panel:org_detail", org.public_id)
    return render(request, "panel/org_form.html", {"form": form})


def org_detail(request, id):
    org = by_public_id(Organization.objects.all(), id)
    teams = Team.objects.filter(organization=org).select_related("account")
    page = selectors.keyset_page(teams, request.GET.get("cursor"))
    form = OrganizationEditForm(
        request.POST or None,
        initial={
            "name": org.name,
            "external_id": org.external_id or "",
            "billing_email": org.billing_email,
            "status": org.status,
        },
    )
    if request.method == "POST" and form.is_valid():
        data = {k: v for k, v in form.service_fields().items() if k in form.changed_data}
        try:
            services.organization_update(actor=actor(request), org=org, data=data)
        except ServiceError as exc:
            service_error_to_form(form, exc)
        else:
            messages.success(request, "Organization saved." if data else "Nothing changed.")
            return redirect("panel:org_detail", org.public_id)
    webhooks = org.webhook_endpoints.order_by("-pk")[:20]
    return render(
        request,
        "panel/org_detail.html",
        {"org": org, "page": page, "form": form, "webhooks": webhooks},
    )


@require_POST
def org_delete(request, id):
    org = by_public_id(Organization.objects.all(), id)
    try:
        services.organization_delete(actor=actor(request), org=org)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect("panel:org_detail", org.public_id)
    messages.success(request, f"Organization {org.name} deleted.")
    return redirect("panel:org_list")
