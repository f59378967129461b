"""The playground: send a prompt through the real gateway as a team, watch the answer stream,
then see the tokens and the charge once the call is settled.

Viewers may look but not send: a prompt spends the team's credits (the middleware refuses
their POST like any other change)."""

import json
import re

from django.http import Http404, StreamingHttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import escape
from django.views.decorators.http import require_POST

from billing.models import UsageRecord
from panel import playground
from panel.forms.playground import PlaygroundForm
from panel.views.common import actor, no_store, param
from teams.models import Team

# Where the streamed answer, and what follows it, go in the page rendered without the script.
ANSWER_MARK = "<!--playground-answer-->"
AFTER_MARK = "<!--playground-after-->"
REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # as UsageRecord.request_id holds
# How often the page asks whether the call is settled (every POLL_SECONDS) before it gives up.
POLL_SECONDS = 0.7
MAX_POLLS = 90
RECENT_TEAMS = 8


def _team(public_id: str):
    if not public_id:
        return None
    return (
        Team.objects.select_related("organization", "account")
        .prefetch_related("model_groups")
        .filter(public_id=public_id)
        .first()
    )


def _context(request, form, team, team_id, **extra) -> dict:
    recent = []
    if team is None:
        recent = list(
            Team.objects.filter(status=Team.Status.ACTIVE)
            .select_related("organization")
            .order_by("-pk")[:RECENT_TEAMS]
        )
    return {
        "form": form,
        "team": team,
        "team_id": team_id,
        "recent_teams": recent,
        "key_minutes": int(playground.KEY_LIFETIME.total_seconds() // 60),
        **extra,
    }


def playground_page(request):
    team_id = param(request, "team", 40)
    team = _team(team_id)
    initial = {"team": team_id}
    group = param(request, "group", 200)
    if team is not None and group:
        initial["model_group"] = team.model_groups.filter(name=group).first()
    form = PlaygroundForm(initial=initial, team=team)
    return render(request, "panel/playground.html", _context(request, form, team, team_id))


@require_POST
def playground_send(request):
    team_id = request.POST.get("team", "")[:40]
    team = _team(team_id.replace("\x00", ""))
    form = PlaygroundForm(request.POST, team=team)
    streaming = request.headers.get("X-Playground") == "stream"
    if not form.is_valid():
        template = "panel/_playground_form.html" if streaming else "panel/playground.html"
        return render(request, template, _context(request, form, team, team_id), status=400)
    events = playground.call_events(
        actor=actor(request),
        username=request.user.get_username(),
        team=team,
        group=form.cleaned_data["model_group"],
        messages=form.chat_messages(),
        max_tokens=form.cleaned_data["max_tokens"],
        base_url=playground.gateway_url(request),
    )
    if streaming:
        response = StreamingHttpResponse(_sse(events), content_type="text/event-stream")
    else:
        page = render_to_string(
            "panel/playground.html",
            _context(request, form, team, team_id, answer_mark=ANSWER_MARK, after_mark=AFTER_MARK),
            request=request,
        )
        head, _, rest = page.partition(ANSWER_MARK)
        middle, _, tail = rest.partition(AFTER_MARK)
        response = StreamingHttpResponse(
            _html(events, head, middle, tail), content_type="text/html; charset=utf-8"
        )
    response["X-Accel-Buffering"] = "no"  # a proxy in front must pass each piece on at once
    return no_store(response)


def _result_url(request_id: str) -> str:
    return reverse("panel:playground_call", args=[request_id]) if request_id else ""


async def _sse(events):
    """The events as Server-Sent Events, for the page's script."""
    async for event in events:
        data = dict(event.data)
        if event.kind == "end":
            data["result_url"] = _result_url(data["request_id"])
        yield f"event: {event.kind}\ndata: {json.dumps(data)}\n\n"


async def _html(events, head: str, middle: str, tail: str):
    """The events as a page that renders while it arrives (no script needed)."""
    yield head
    after = {"error": None, "usage": None, "end": None}
    async for event in events:
        if event.kind == "delta":
            yield str(escape(event.data["text"]))
        elif event.kind in after:
            after[event.kind] = event.data
    yield middle
    if after["end"]:
        after["result_url"] = _result_url(after["end"]["request_id"])
    yield render_to_string("panel/_playground_after.html", after)
    yield tail


def playground_call(request, request_id):
    """A playground call's usage record and ledger entry, once settled; until then a
    placeholder that asks again (htmx), for at most MAX_POLLS times."""
    if not REQUEST_ID.match(request_id):
        raise Http404
    record = (
        UsageRecord.objects.select_related("team__account", "key", "ledger_entry")
        .filter(request_id=request_id)
        .first()
    )
    # The usage entry that debited it, with the other calls of the team settled in its batch.
    entry = record.ledger_entry if record is not None else None
    polls = param(request, "n", 3)
    polls = int(polls) if polls.isdigit() else 0
    context = {
        "request_id": request_id,
        "record": record,
        "entry": entry,
        "next_poll": polls + 1 if polls < MAX_POLLS else None,
        "poll_delay_ms": int(POLL_SECONDS * 1000),
    }
    if request.headers.get("HX-Request"):
        # In the playground page: the team's balance up there is updated too (out of band).
        return render(request, "panel/_playground_result.html", {**context, "oob": True})
    return render(request, "panel/playground_call.html", context)
