"""Teams: list, create, detail (credits, keys, ledger, usage), settings, status, credits."""

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from billing import selectors as billing
from billing import services as credits
from billing.models import LedgerEntry
from core.errors import ServiceError
from core.money import display_micros
from orgs.models import Organization
from panel import charts, litellm, selectors
from panel.forms.common import new_idempotency_key, service_error_to_form
from panel.forms.keys import KeyForm
from panel.forms.teams import CreditForm, TeamCreateForm, TeamForm
from panel.views.common import actor, by_public_id, choice_filter, param
from teams import services
from teams.models import Team, VirtualKey

STATUS_ACTIONS = {
    "suspend": (Team.Status.SUSPENDED, "suspended"),
    "pause": (Team.Status.PAUSED, "paused"),
    "resume": (Team.Status.ACTIVE, "resumed"),
}
# Usage chart: this many models get their own colour, the rest are summed as "other".
CHART_MODELS = 5


def _teams():
    return Team.objects.select_related("organization", "account")


def team_list(request):
    q = param(request, "q")
    teams = _teams()
    if q:
        teams = (
            teams.filter(name__icontains=q)
            | teams.filter(public_id=q)
            | teams.filter(external_id=q)
        )
    teams, status = choice_filter(request, teams, "status", Team.Status)
    page = selectors.keyset_page(teams, request.GET.get("cursor"))
    return render(
        request,
        "panel/team_list.html",
        {"page": page, "q": q, "status": status, "statuses": Team.Status.choices},
    )


def team_create(request):
    initial = {"organization": param(request, "org")}
    form = TeamCreateForm(request.POST or None, initial=initial)
    org = Organization.objects.filter(public_id=initial["organization"]).first()
    if request.method == "POST" and form.is_valid():
        fields, groups = form.service_fields()
        try:
            team = services.team_create(
                actor=actor(request),
                organization=form.cleaned_data["organization"],
                model_groups=groups or [],
                **fields,
            )
        except ServiceError as exc:
            service_error_to_form(form, exc)
        else:
            messages.success(request, f"Team {team.name} created.")
            return redirect("panel:team_detail", team.public_id)
    return render(request, "panel/team_form.html", {"form": form, "org": org, "team": None})


def team_edit(request, id):
    team = by_public_id(_teams(), id)
    form = TeamForm(request.POST or None, initial=TeamForm.initial_for(team))
    if request.method == "POST" and form.is_valid():
        fields, groups = form.service_fields(names=set(form.changed_data))
        try:
            services.team_update(actor=actor(request), team=team, data=fields, model_groups=groups)
        except ServiceError as exc:
            service_error_to_form(form, exc)
        else:
            changed = bool(fields) or groups is not None
            messages.success(request, "Team settings saved." if changed else "Nothing changed.")
            return redirect("panel:team_detail", team.public_id)
    return render(
        request, "panel/team_form.html", {"form": form, "org": team.organization, "team": team}
    )


def _credit_form(data=None):
    return CreditForm(data, initial={"idempotency_key": new_idempotency_key()})


def team_detail(request, id, credit_form=None):
    team = by_public_id(_teams().prefetch_related("model_groups"), id)
    now = timezone.now()
    usage = selectors.team_usage(team=team, now=now)
    ranked = [row["model"] for row in sorted(usage["by_model"]["rows"], key=_by_price)]
    series = [
        (model, [usage["grid"].get(model, {}).get(day, 0) for day in usage["days"]])
        for model in ranked[:CHART_MODELS]
    ]
    if len(ranked) > CHART_MODELS:
        rest = ranked[CHART_MODELS:]
        series.append(
            ("other", [sum(usage["grid"][m].get(day, 0) for m in rest) for day in usage["days"]])
        )
    chart = charts.stacked_bars(
        title="Charged per day by model, last 30 days (credits)",
        labels=[day.strftime("%b %d") for day in usage["days"]],
        series=series or [("charged", [0] * len(usage["days"]))],
        fmt=lambda v: display_micros(int(v)),
    )
    keys = VirtualKey.objects.filter(team=team).order_by("-pk")[:100]
    ledger = LedgerEntry.objects.filter(account__team=team).order_by("-pk")[:10]
    summary = billing.credits_summary(team=team)
    limit = summary["budget_limit_micros"]
    context = {
        "team": team,
        "summary": summary,
        "budget_pct": min(100, 100 * summary["period_spend_micros"] // limit) if limit else 0,
        "usage": usage,
        "chart": chart,
        "keys": keys,
        "ledger": ledger,
        "credit_form": credit_form or _credit_form(),
        "key_form": KeyForm(team=team),
        "form_token": new_idempotency_key(),
        "status_actions": _status_actions(team),
        "litellm": litellm.team_state(team),  # None while the integration is off
    }
    return render(request, "panel/team_detail.html", context)


def _by_price(row):
    return -row["price_micros"]


def _status_actions(team) -> list[tuple[str, str]]:
    if team.status == Team.Status.ACTIVE:
        return [("pause", "Pause"), ("suspend", "Suspend")]
    if team.status == Team.Status.PAUSED:
        return [("resume", "Resume"), ("suspend", "Suspend")]
    return [("resume", "Resume")]


@require_POST
def team_status(request, id, action):
    team = by_public_id(_teams(), id)
    if action not in STATUS_ACTIONS:
        return redirect("panel:team_detail", team.public_id)
    status, verb = STATUS_ACTIONS[action]
    services.team_set_status(actor=actor(request), team=team, status=status)
    messages.success(request, f"Team {team.name} {verb}.")
    return redirect("panel:team_detail", team.public_id)


@require_POST
def team_credits(request, id):
    """Grant or adjust credits; a re-sent form (same hidden key) posts once."""
    team = by_public_id(_teams(), id)
    form = CreditForm(request.POST)
    if form.is_valid():
        service = {
            LedgerEntry.Kind.GRANT: credits.credits_grant,
            LedgerEntry.Kind.ADJUSTMENT: credits.credits_adjust,
        }[form.cleaned_data["kind"]]
        try:
            result = service(
                team=team,
                amount_micros=form.cleaned_data["amount"],
                reason=form.cleaned_data["reason"],
                actor=actor(request),
                idempotency_key=form.cleaned_data["idempotency_key"],
            )
        except ServiceError as exc:
            service_error_to_form(form, exc)
        else:
            amount = display_micros(form.cleaned_data["amount"])
            if result.created:
                messages.success(request, f"Posted {amount} credits to {team.name}.")
            else:
                messages.info(request, "That form was already submitted; nothing was posted twice.")
            return HttpResponseRedirect(reverse("panel:team_detail", args=[team.public_id]))
    response = team_detail(request, id, credit_form=form)
    response.status_code = 400
    return response


def team_ledger(request, id):
    team = by_public_id(_teams(), id)
    entries = LedgerEntry.objects.filter(account__team=team)
    entries, kind = choice_filter(request, entries, "kind", LedgerEntry.Kind)
    page = selectors.keyset_page(entries, request.GET.get("cursor"))
    return render(
        request,
        "panel/team_ledger.html",
        {"team": team, "page": page, "kind": kind, "kinds": LedgerEntry.Kind.choices},
    )
