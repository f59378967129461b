"""Alerts a team crossed, and organizations' webhook endpoints with their delivery log."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from alerts import services
from alerts.models import Alert, WebhookDelivery, WebhookEndpoint
from core.errors import ServiceError
from orgs.models import Organization
from panel import selectors
from panel.forms.alerts import WebhookCreateForm, WebhookForm
from panel.forms.common import new_idempotency_key, service_error_to_form
from panel.templatetags.panel import credits_text
from panel.views.common import (
    actor,
    by_public_id,
    choice_filter,
    create_once,
    param,
    rotate_once,
    secret_page,
)
from teams.models import Team

ENABLED = {"yes": True, "no": False}


def team_alerts(request, id):
    team = by_public_id(Team.objects.select_related("organization"), id)
    alerts = Alert.objects.filter(team=team).prefetch_related("deliveries__endpoint")
    alerts, kind = choice_filter(request, alerts, "kind", Alert.Kind)
    page = selectors.keyset_page(alerts, request.GET.get("cursor"))
    for alert in page.rows:
        alert.figures = _figures(alert)
    context = {"team": team, "page": page, "kind": kind, "kinds": Alert.Kind.choices}
    return render(request, "panel/team_alerts.html", context)


def _figures(alert) -> list[tuple[str, str]]:
    """The figures recorded at the crossing, for people: money in credits, nothing empty."""
    figures = []
    for name, value in alert.data.items():
        if value is None:
            continue
        if name.endswith("_micros"):
            name, value = name.removesuffix("_micros"), credits_text(value)
        figures.append((name.replace("_", " "), value))
    return figures


def _endpoints():
    return WebhookEndpoint.objects.select_related("organization")


def webhook_list(request):
    endpoints = _endpoints()
    org_id = param(request, "organization", 40)
    enabled = param(request, "enabled")
    if org_id:
        endpoints = endpoints.filter(organization__public_id=org_id)
    if enabled in ENABLED:
        endpoints = endpoints.filter(enabled=ENABLED[enabled])
    page = selectors.keyset_page(endpoints, request.GET.get("cursor"))
    context = {"page": page, "org_id": org_id, "enabled": enabled}
    return render(request, "panel/webhook_list.html", context)


def _secret_page(request, endpoint, secret, *, rotated=False):
    template = "panel/webhook_secret.html"
    return secret_page(request, template, "endpoint", endpoint, secret, rotated=rotated)


def webhook_create(request):
    org = Organization.objects.filter(public_id=param(request, "org", 40)).first()
    form = WebhookCreateForm(
        request.POST or None, initial={"organization": org.public_id if org else ""}
    )
    done, token = create_once(
        request,
        form,
        create=lambda: services.webhook_endpoint_create(actor=actor(request), **form.cleaned_data),
        detail="panel:webhook_detail",
        # The same form sent again (a reload, a double click): create nothing more.
        already="That endpoint was already created; its secret was shown once.",
        shown=lambda endpoint, secret: _secret_page(request, endpoint, secret),
    )
    if done is not None:
        return done
    context = {"form": form, "org": org, "form_token": token}
    return render(request, "panel/webhook_form.html", context)


def webhook_detail(request, id):
    endpoint = by_public_id(_endpoints(), id)
    form = WebhookForm(
        request.POST or None,
        initial={
            "url": endpoint.url,
            "description": endpoint.description,
            "enabled": endpoint.enabled,
        },
    )
    if request.method == "POST" and form.is_valid():
        data = {k: v for k, v in form.cleaned_data.items() if k in form.changed_data}
        try:
            services.webhook_endpoint_update(actor=actor(request), endpoint=endpoint, data=data)
        except ServiceError as exc:
            service_error_to_form(form, exc)
        else:
            messages.success(request, "Endpoint saved." if data else "Nothing changed.")
            return redirect("panel:webhook_detail", endpoint.public_id)
    deliveries = endpoint.deliveries.select_related("alert__team")
    deliveries, status = choice_filter(request, deliveries, "status", WebhookDelivery.Status)
    page = selectors.keyset_page(deliveries, request.GET.get("cursor"))
    context = {
        "endpoint": endpoint,
        "form": form,
        "page": page,
        "status": status,
        "statuses": WebhookDelivery.Status.choices,
        "form_token": new_idempotency_key(),
    }
    return render(request, "panel/webhook_detail.html", context, status=400 if form.errors else 200)


@require_POST
def webhook_toggle(request, id):
    """Enable or disable: a disabled endpoint gets no new deliveries."""
    endpoint = by_public_id(_endpoints(), id)
    enabled = request.POST.get("enabled") == "on"
    if endpoint.enabled != enabled:
        services.webhook_endpoint_update(
            actor=actor(request), endpoint=endpoint, data={"enabled": enabled}
        )
    messages.success(request, f"Endpoint {'enabled' if enabled else 'disabled'}.")
    return redirect("panel:webhook_detail", endpoint.public_id)


@require_POST
def webhook_rotate(request, id):
    endpoint = by_public_id(_endpoints(), id)
    return rotate_once(
        request,
        endpoint,
        rotate=lambda: services.webhook_endpoint_rotate_secret(
            actor=actor(request), endpoint=endpoint
        ),
        detail="panel:webhook_detail",
        already="The secret was already rotated; the new one was shown once.",
        shown=lambda endpoint, secret: _secret_page(request, endpoint, secret, rotated=True),
    )


@require_POST
def webhook_delete(request, id):
    endpoint = by_public_id(_endpoints(), id)
    org = endpoint.organization
    services.webhook_endpoint_delete(actor=actor(request), endpoint=endpoint)
    messages.success(request, f"Endpoint {endpoint.url} deleted, with its delivery log.")
    return redirect("panel:org_detail", org.public_id)


@require_POST
def webhook_delivery_resend(request, id):
    """Queue a failed delivery again; refused (with the reason) for one that succeeded."""
    delivery = by_public_id(WebhookDelivery.objects.select_related("endpoint"), id)
    try:
        services.webhook_delivery_resend(actor=actor(request), delivery=delivery)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Delivery {delivery.public_id} queued to be sent again.")
    return redirect("panel:webhook_detail", delivery.endpoint.public_id)
