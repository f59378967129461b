"""The shared catalog: model groups (ordered members, weights), models and upstreams."""

from django.contrib import messages
from django.db.models import Count
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.errors import ServiceError
from modelgroups import connection, services
from modelgroups.models import Model, ModelGroup, Upstream
from panel import call_selectors
from panel.forms.catalog import (
    CatalogModelForm,
    MemberFormSet,
    ModelGroupForm,
    UpstreamEditForm,
    UpstreamForm,
)
from panel.forms.common import service_error_to_form
from panel.views.common import actor, by_public_id


def _delete(request, obj, service, what):
    """Delete through the service; a refusal goes back to the object's page with the reason."""
    try:
        service(actor=actor(request), **{what: obj})
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect(f"panel:{what}_edit", obj.public_id)
    messages.success(request, f"{obj.name} deleted.")
    return redirect(f"panel:{what}_list")


# Model groups


def group_list(request):
    groups = ModelGroup.objects.prefetch_related("members__model").annotate(
        team_count=Count("teams")
    )
    return render(request, "panel/group_list.html", {"groups": groups.order_by("name")})


def _group_form(request, group):
    initial = {}
    members = []
    if group is not None:
        initial = {
            "name": group.name,
            "display_name": group.display_name,
            "description": group.description,
            "cache_ttl_seconds": group.cache_ttl_seconds,
        }
        members = [
            {"model": m.model, "priority": m.priority, "weight": m.weight}
            for m in group.members.select_related("model")
        ]
    form = ModelGroupForm(request.POST or None, initial=initial)
    formset = MemberFormSet(request.POST or None, initial=members, prefix="members")
    if request.method == "POST" and form.is_valid() and formset.is_valid():
        try:
            if group is None:
                group = services.model_group_create(
                    actor=actor(request), members=formset.members(), **form.cleaned_data
                )
                messages.success(request, f"Model group {group.name} created.")
            else:
                data = {k: v for k, v in form.cleaned_data.items() if k in form.changed_data}
                services.model_group_update(
                    actor=actor(request), group=group, data=data, members=formset.members()
                )
                messages.success(request, f"Model group {group.name} saved.")
        except ServiceError as exc:
            service_error_to_form(form, exc)
        else:
            return redirect("panel:group_list")
    return render(
        request,
        "panel/group_form.html",
        {"form": form, "formset": formset, "group": group},
    )


def group_create(request):
    return _group_form(request, None)


def group_edit(request, id):
    group = by_public_id(ModelGroup.objects.annotate(team_count=Count("teams")), id)
    return _group_form(request, group)


@require_POST
def group_delete(request, id):
    group = by_public_id(ModelGroup.objects.all(), id)
    return _delete(request, group, services.model_group_delete, "group")


# Models


def model_list(request):
    models = call_selectors.models_with_health()
    return render(request, "panel/model_list.html", {"models": models})


# A person waits on the page: a hung upstream answers "down" after this, not the probe's 10 s.
CHECK_TIMEOUT_SECONDS = 5.0


@require_POST
def model_check(request, id):
    """Probe one model now, record the verdict (what the gateway's routing reads) and say it."""
    model = by_public_id(Model.objects.select_related("upstream"), id)
    if not model.enabled:
        messages.error(
            request,
            f"{model.name} is disabled, so the gateway sends it no calls and its health is not "
            "checked. Enable it (edit the model) to check it.",
        )
        return redirect("panel:model_list")
    try:
        health = services.model_health_check(model=model, timeout=CHECK_TIMEOUT_SECONDS)
    except ServiceError as exc:
        messages.error(request, f"{model.name} was not checked: {exc.message}")
        return redirect("panel:model_list")
    latency = f" in {health.latency_ms:,} ms" if health.latency_ms is not None else ""
    if health.status == health.Status.UP:
        messages.success(request, f"{model.name} is up: it answered{latency}.")
    else:
        error = f": {health.last_error}" if health.last_error else ""
        messages.error(request, f"{model.name} is {health.status}{latency}{error}")
    return redirect("panel:model_list")


def _model_form(request, model):
    initial = CatalogModelForm.initial_for(model) if model else None
    form = CatalogModelForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            if model is None:
                model = services.model_create(actor=actor(request), **form.service_fields())
                messages.success(request, f"Model {model.name} created.")
            else:
                data = form.service_fields(names=set(form.changed_data))
                services.model_update(actor=actor(request), model=model, data=data)
                messages.success(request, f"Model {model.name} saved.")
        except ServiceError as exc:
            service_error_to_form(form, exc)
        else:
            return redirect("panel:model_list")
    return render(request, "panel/model_form.html", {"form": form, "model": model})


def model_create(request):
    return _model_form(request, None)


def model_edit(request, id):
    return _model_form(request, by_public_id(Model.objects.select_related("upstream"), id))


@require_POST
def model_delete(request, id):
    model = by_public_id(Model.objects.all(), id)
    return _delete(request, model, services.model_delete, "model")


# Upstreams


def upstream_list(request):
    upstreams = Upstream.objects.annotate(model_count=Count("models")).order_by("name")
    return render(request, "panel/upstream_list.html", {"upstreams": upstreams})


def upstream_create(request):
    form = UpstreamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            upstream = services.upstream_create(actor=actor(request), **form.cleaned_data)
        except ServiceError as exc:
            service_error_to_form(form, exc)
        else:
            messages.success(request, f"Upstream {upstream.name} created.")
            return redirect("panel:upstream_list")
    return render(request, "panel/upstream_form.html", {"form": form, "upstream": None})


def _upstream_initial(upstream) -> dict:
    return {
        "name": upstream.name,
        "kind": upstream.kind,
        "base_url": upstream.base_url,
        "connect_timeout_seconds": upstream.connect_timeout_seconds,
        "read_timeout_seconds": upstream.read_timeout_seconds,
        "api_version": upstream.api_version,
        "enabled": upstream.enabled,
    }


def upstream_edit(request, id):
    upstream = by_public_id(Upstream.objects.annotate(model_count=Count("models")), id)
    form = UpstreamEditForm(request.POST or None, initial=_upstream_initial(upstream))
    if request.method == "POST" and form.is_valid():
        data = {
            k: v
            for k, v in form.cleaned_data.items()
            if k in form.changed_data and k not in ("api_key", "clear_api_key")
        }
        # Write-only: an empty field keeps the stored key; "" (clear) removes it.
        if form.cleaned_data["api_key"]:
            data["api_key"] = form.cleaned_data["api_key"]
        elif form.cleaned_data["clear_api_key"]:
            data["api_key"] = ""
        try:
            services.upstream_update(actor=actor(request), upstream=upstream, data=data)
        except ServiceError as exc:
            service_error_to_form(form, exc)
        else:
            messages.success(request, f"Upstream {upstream.name} saved.")
            return redirect("panel:upstream_list")
    return render(request, "panel/upstream_form.html", {"form": form, "upstream": upstream})


@require_POST
def upstream_test(request, id):
    """Make a real call to the upstream and show its answer or the error."""
    upstream = by_public_id(Upstream.objects.annotate(model_count=Count("models")), id)
    outcome = connection.upstream_probe(upstream=upstream)
    form = UpstreamEditForm(initial=_upstream_initial(upstream))
    return render(
        request,
        "panel/upstream_form.html",
        {"form": form, "upstream": upstream, "probe": outcome},
    )


@require_POST
def upstream_delete(request, id):
    upstream = by_public_id(Upstream.objects.all(), id)
    return _delete(request, upstream, services.upstream_delete, "upstream")
