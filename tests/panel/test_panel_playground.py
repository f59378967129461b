"""The playground sends a prompt through the real gateway (served by uvicorn with the panel),
streams the answer, and shows the charge once settled; its key lives for one call only."""

import json
import time

import httpx
import pytest
from django.urls import reverse

from billing import settlement
from billing.models import LedgerEntry, UsageRecord
from modelgroups import services as catalog
from orgs.models import AuditEvent
from teams.models import VirtualKey
from teams.services import team_set_status
from tests.helpers.panel import logged_in, make_user
from tests.helpers.tenants import GatewayTenant, db_state
from tests.helpers.waiting import eventually


@pytest.fixture
def server(live, monkeypatch):
    from django.db import connections

    # The server answers each request in a thread with its own connection: closed after the
    # request, so the test database can be dropped at the end.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)
    return live


def browser_session(server, user) -> httpx.Client:
    """An HTTP client with the user's session and CSRF cookie, like a logged-in browser."""
    session = logged_in(user).cookies["sessionid"].value
    client = httpx.Client(base_url=server.url, cookies={"sessionid": session}, timeout=30)
    client.get(reverse("panel:playground"))  # sets the CSRF cookie
    client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
    return client


@pytest.fixture
def admin_http(server):
    client = browser_session(server, make_user("alice", "admin"))
    yield client
    client.close()


@pytest.fixture
def team(mock_catalog, gw_org):
    return GatewayTenant("play team", gw_org, [mock_catalog["groups"]["chat"]], 10_000_000)


def form(team, group, prompt="Hello from the playground", **extra) -> dict:
    return {
        "team": team.team.public_id,
        "model_group": str(group.pk),
        "prompt": prompt,
        "max_tokens": "40",
        **extra,
    }


def events(response) -> list[tuple[str, dict, float]]:
    """The SSE events of a streamed response, with the time each arrived."""
    found, buffer = [], ""
    for text in response.iter_text():
        buffer += text
        while "\n\n" in buffer:
            frame, buffer = buffer.split("\n\n", 1)
            lines = dict(line.split(": ", 1) for line in frame.splitlines())
            found.append((lines["event"], json.loads(lines["data"]), time.monotonic()))
    return found


def send(client, data, stream=True):
    headers = {"X-Playground": "stream"} if stream else {}
    return client.stream("POST", reverse("panel:playground_send"), data=data, headers=headers)


def playground_keys():
    return VirtualKey.objects.filter(name__startswith="playground:")


def test_a_prompt_streams_through_the_gateway_and_is_charged_once_settled(
    admin_http, team, mock_catalog
):
    chat = mock_catalog["groups"]["chat"]
    # when
    with send(admin_http, form(team, chat)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        got = events(response)
    # then the answer streamed in pieces, with the tokens at the end
    kinds = [kind for kind, _, _ in got]
    assert kinds[0] == "start" and kinds[-2:] == ["usage", "end"]
    assert kinds.count("delta") > 1
    answer = "".join(data["text"] for kind, data, _ in got if kind == "delta")
    assert answer.startswith("Mock reply to: Hello from the playground")
    start, usage, end = got[0][1], got[-2][1], got[-1][1]
    assert start["model"] == "mock-a"
    rid = end["request_id"]
    assert rid == start["request_id"] and rid.startswith("req_")
    assert end["result_url"] == reverse("panel:playground_call", args=[rid])
    # and its key was minted for this call only, as the user, and revoked after it
    key = playground_keys().get()
    assert key.team == team.team and key.name == "playground: alice"
    assert key.status == "revoked" and key.expires_at is not None
    assert (key.expires_at - key.created_at).total_seconds() <= 300
    assert list(key.model_groups.all()) == [chat]
    audited = AuditEvent.objects.filter(object_id=key.public_id).order_by("pk")
    assert [(e.action, e.actor) for e in audited] == [
        ("key.create", "user:alice"),
        ("key.revoke", "user:alice"),
    ]
    # when the result is asked before the settler ran, it says so and asks again later
    pending = admin_http.get(end["result_url"], headers={"HX-Request": "true"})
    assert "Settling the charge" in pending.text and "hx-trigger" in pending.text
    # when the call is settled
    settlement.settle_usage()
    settled = admin_http.get(end["result_url"], headers={"HX-Request": "true"})
    # then the page shows the tokens and the price, as the ledger has them
    record = UsageRecord.objects.get(request_id=rid)
    entry = LedgerEntry.objects.get(calls__request_id=rid)  # the entry that debited the call
    assert record.key == key and record.team == team.team
    assert (record.input_tokens, record.output_tokens) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    assert record.price_micros > 0 and entry.amount_micros == -record.price_micros
    assert "hx-trigger" not in settled.text
    assert 'id="playground-balance" hx-swap-oob="true">9.99' in settled.text
    assert f"{record.input_tokens} / {record.output_tokens}" in settled.text
    assert f"{record.price_micros / 1e6:.6f}" in settled.text


def test_the_answer_reaches_the_page_while_it_is_generated(admin_http, mock_catalog, gw_org):
    # given a model that sends 5 pieces 250 ms apart
    group = slow_group(mock_catalog)
    team = GatewayTenant("slow team", gw_org, [group], 10_000_000)
    # when
    with send(admin_http, form(team, group)) as response:
        got = events(response)
    # then the first piece arrived long before the last: relayed, not buffered
    deltas = [at for kind, _, at in got if kind == "delta"]
    assert len(deltas) >= 4
    assert deltas[-1] - deltas[0] >= 0.5


def slow_group(mock_catalog, delay_ms=250, pieces=5):
    """A model group whose model sends its answer in `pieces` pieces, `delay_ms` apart."""
    slow = catalog.model_create(
        actor="test",
        name="mock-slow",
        upstream=mock_catalog["upstream"],
        upstream_model=f"mock-a-chunk-delay-{delay_ms}-reply-{pieces}",
        input_price_micros=1_000_000,
        output_price_micros=1_000_000,
        max_output_tokens=50,
    )
    return catalog.model_group_create(actor="test", name="slow", members=[{"model": slow}])


def test_a_browser_that_leaves_mid_answer_still_gets_the_key_revoked(
    admin_http, mock_catalog, gw_org
):
    # given an answer that takes seconds
    group = slow_group(mock_catalog, delay_ms=500, pieces=20)
    team = GatewayTenant("leaving team", gw_org, [group], 10_000_000)
    # when the browser goes away after the first piece
    with send(admin_http, form(team, group)) as response:
        for text in response.iter_text():
            if "event: delta" in text:
                break
    # then the key is revoked anyway, well before the answer would have ended
    eventually(
        lambda: playground_keys().get().status == "revoked",
        what="the playground key being revoked",
    )


def test_without_javascript_the_answer_streams_into_a_page(admin_http, team, mock_catalog):
    chat = mock_catalog["groups"]["chat"]
    with send(admin_http, form(team, chat, prompt="No script <b>here</b>"), stream=False) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        page = r.read().decode()
    assert "Mock reply to: No script &lt;b&gt;here&lt;/b&gt;" in page
    assert "See the charge" in page and page.rstrip().endswith("</html>")
    assert playground_keys().get().status == "revoked"


def test_a_refusal_by_the_gateway_is_shown_and_the_key_still_revoked(
    admin_http, mock_catalog, gw_org
):
    # given a team without credits
    chat = mock_catalog["groups"]["chat"]
    broke = GatewayTenant("broke team", gw_org, [chat], 0)
    # when
    with send(admin_http, form(broke, chat)) as response:
        got = events(response)
    # then
    assert [kind for kind, _, _ in got] == ["error"]
    error = got[0][1]
    assert error["status"] == 429 and "credits do not cover" in error["message"]
    assert playground_keys().get().status == "revoked"
    assert not UsageRecord.objects.filter(team=broke.team).exists()


def test_a_model_group_the_team_cannot_use_is_a_field_error(admin_http, team, mock_catalog):
    # given
    before = db_state()
    # when
    other = mock_catalog["groups"]["other"]
    response = admin_http.post(
        reverse("panel:playground_send"),
        data=form(team, other),
        headers={"X-Playground": "stream"},
    )
    # then the form comes back with the error next to the field, and no key was minted
    assert response.status_code == 400
    assert 'id="id_model_group_error"' in response.text
    assert "Select a valid choice" in response.text
    assert db_state() == before


def test_a_paused_team_cannot_be_played_with(admin_http, team, mock_catalog):
    team_set_status(actor="test", team=team.team, status="paused")
    before = db_state()
    response = admin_http.post(
        reverse("panel:playground_send"), data=form(team, mock_catalog["groups"]["chat"])
    )
    assert response.status_code == 400
    assert "This team is paused" in response.text
    assert db_state() == before


def test_viewers_see_the_playground_but_cannot_send(server, team, mock_catalog):
    client = browser_session(server, make_user("victor", "viewer"))
    page = client.get(reverse("panel:playground"), params={"team": team.team.public_id})
    before = db_state()
    refused = client.post(
        reverse("panel:playground_send"), data=form(team, mock_catalog["groups"]["chat"])
    )
    client.close()
    assert page.status_code == 200
    assert "Viewers cannot send prompts" in page.text and "disabled" in page.text
    assert refused.status_code == 403
    assert db_state() == before
    assert not playground_keys().exists()


def test_an_unknown_team_is_refused_before_anything_is_minted(as_admin, catalog_objects):
    before = db_state()
    data = {"team": "team_nope", "model_group": "1", "prompt": "hi", "max_tokens": "5"}
    url = reverse("panel:playground_send")
    for headers, says in [
        ({"HTTP_X_PLAYGROUND": "stream"}, b"Pick a team first."),  # the form, for the script
        ({}, b"No team with id team_nope."),  # the page
    ]:
        response = as_admin.post(url, data, **headers)
        assert response.status_code == 400
        assert says in response.content
    assert db_state() == before


def test_an_unreachable_gateway_is_said_and_the_key_revoked(
    admin_http, team, mock_catalog, settings
):
    # given a gateway address nothing listens on (the discard port)
    settings.PANEL_GATEWAY_URL = "http://127.0.0.1:9"
    # when
    with send(admin_http, form(team, mock_catalog["groups"]["chat"])) as response:
        got = events(response)
    # then
    assert [(kind, data["message"]) for kind, data, _ in got] == [
        ("error", "Could not reach the gateway at http://127.0.0.1:9: ConnectError.")
    ]
    assert playground_keys().get().status == "revoked"
