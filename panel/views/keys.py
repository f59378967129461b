"""Virtual keys: mint (the secret shown once), list, detail, rotate, revoke."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.errors import ValidationFailed
from panel import selectors
from panel.forms.common import new_idempotency_key
from panel.forms.keys import KeyForm, RotateForm
from panel.views.common import (
    actor,
    by_public_id,
    choice_filter,
    create_once,
    param,
    rotate_once,
    secret_page,
)
from teams import services
from teams.models import Team, VirtualKey

LAST_USED = {"never": "Never used", "used": "Used at least once"}


def _keys():
    return VirtualKey.objects.select_related("team__organization")


def key_list(request):
    keys = _keys()
    q = param(request, "q")
    team_id = param(request, "team", 40)
    last_used = param(request, "last_used")
    if q:
        keys = keys.filter(name__icontains=q) | keys.filter(public_id=q) | keys.filter(key_prefix=q)
    if team_id:
        keys = keys.filter(team__public_id=team_id)
    keys, status = choice_filter(request, keys, "status", VirtualKey.Status)
    if last_used == "never":
        keys = keys.filter(last_used_at__isnull=True)
    elif last_used == "used":
        keys = keys.filter(last_used_at__isnull=False)
    page = selectors.keyset_page(keys, request.GET.get("cursor"))
    context = {
        "page": page,
        "q": q,
        "team_id": team_id,
        "status": status,
        "last_used": last_used,
        "statuses": VirtualKey.Status.choices,
        "last_used_choices": LAST_USED.items(),
    }
    return render(request, "panel/key_list.html", context)


def _secret_page(request, key, secret, *, rotated=False):
    return secret_page(request, "panel/key_secret.html", "key", key, secret, rotated=rotated)


def key_create(request, id):
    team = by_public_id(Team.objects.select_related("organization"), id)
    form = KeyForm(request.POST or None, team=team)

    def create():
        fields, groups = form.service_fields()
        return services.key_create(actor=actor(request), team=team, model_groups=groups, **fields)

    done, token = create_once(
        request,
        form,
        create=create,
        detail="panel:key_detail",
        # The same form sent again (a reload, a double click): mint nothing more.
        already="That key was already created; its secret was shown once.",
        shown=lambda key, secret: _secret_page(request, key, secret),
    )
    if done is not None:
        return done
    return render(request, "panel/key_form.html", {"team": team, "form": form, "form_token": token})


def key_detail(request, id):
    key = by_public_id(_keys().prefetch_related("model_groups"), id)
    usage = key.usage.select_related("team").order_by("-pk")[:20]
    return render(
        request,
        "panel/key_detail.html",
        {
            "key": key,
            "usage": usage,
            "rotate_form": RotateForm(),
            "form_token": new_idempotency_key(),
        },
    )


@require_POST
def key_rotate(request, id):
    key = by_public_id(_keys(), id)

    def rotate():
        form = RotateForm(request.POST)
        if not form.is_valid():
            raise ValidationFailed("Pick how long the old secret keeps working.")
        grace_seconds = form.cleaned_data["grace_period_seconds"]
        return services.key_rotate(actor=actor(request), key=key, grace_seconds=grace_seconds)

    return rotate_once(
        request,
        key,
        rotate=rotate,
        detail="panel:key_detail",
        already="That key was already rotated; the new secret was shown once.",
        shown=lambda key, secret: _secret_page(request, key, secret, rotated=True),
    )


@require_POST
def key_revoke(request, id):
    key = by_public_id(_keys(), id)
    if key.status == VirtualKey.Status.REVOKED:
        messages.info(request, "The key was already revoked.")
    else:
        services.key_revoke(actor=actor(request), key=key)
        messages.success(request, f"Key {key.name} revoked: it stopped working.")
    return redirect("panel:key_detail", key.public_id)
