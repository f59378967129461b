"""The logs page (filters, keyset paging on (created_at, id), an index for every filter), one
call's detail (bodies, a stream joined into its text) and the models' health with "Check now"."""

import itertools
import re
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from billing import settlement
from billing.models import CallLog, UsageRecord
from modelgroups import services as catalog
from modelgroups.models import ModelHealth
from panel import call_selectors
from tests.helpers.panel import logged_in, make_user
from tests.helpers.tenants import GatewayTenant

_ids = itertools.count(1)


def call(tenant, *, at, model="gpt-a", group="fast", status="ok", key=True, **fields):
    return UsageRecord.objects.create(
        request_id=f"req-logs-{next(_ids)}",
        organization=tenant.org,
        team=tenant.team,
        key=tenant.key if key else None,
        model=model,
        model_group=group,
        status=status,
        input_tokens=fields.pop("input_tokens", 10),
        output_tokens=20,
        price_micros=1500,
        cost_micros=700,
        latency_ms=42,
        created_at=at,
        **fields,
    )


def ids(rows) -> list[str]:
    return [r.request_id for r in rows]


def newest_first(records) -> list[str]:
    return ids(sorted(records, key=lambda r: (r.created_at, r.pk), reverse=True))


def walk(client, query: dict, direction: str = "older", start: str | None = None) -> list[list]:
    """Follow the page's links in one direction; the pages' request ids."""
    pages, cursor = [], start
    while True:
        params = {**query, **({direction: cursor} if cursor else {})}
        response = client.get(reverse("panel:logs"), params)
        assert response.status_code == 200, response.content
        page = response.context["page"]
        pages.append(ids(page.rows))
        cursor = getattr(page, direction)
        if cursor is None or len(pages) > 20:
            return pages


# --- paging ---------------------------------------------------------------------------------


def test_paging_walks_every_call_once_across_equal_timestamps(as_admin, tenant_a, monkeypatch):
    # given 8 calls, several sharing a timestamp, and pages of 3 (boundaries fall inside ties)
    monkeypatch.setattr(call_selectors, "PAGE_SIZE", 3)
    now = timezone.now().replace(microsecond=0)
    stamps = [now, now, now, now - timedelta(seconds=5), now - timedelta(seconds=5)]
    stamps += [now - timedelta(minutes=3)] * 3
    records = [call(tenant_a, at=at) for at in stamps]
    expected = newest_first(records)
    # when walking older, page by page
    pages = walk(as_admin, {})
    # then every call comes exactly once, in (created_at, id) order, newest first
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [rid for page in pages for rid in page] == expected
    # and walking back newer from the last page gives the same pages
    last = as_admin.get(reverse("panel:logs"), {"older": _cursor_before(records, pages[-1])})
    assert ids(last.context["page"].rows) == pages[-1]
    back = walk(as_admin, {}, "newer", start=str(call_selectors.Cursor.of(_row(pages[-1][0]))))
    assert back == pages[-2::-1]


def _row(request_id):
    return UsageRecord.objects.get(request_id=request_id)


def _cursor_before(records, page) -> str:
    """The cursor of the row just above the page's first (what the "Older" link carried)."""
    order = newest_first(records)
    return str(call_selectors.Cursor.of(_row(order[order.index(page[0]) - 1])))


def test_the_first_page_has_no_newer_link_and_the_last_no_older(as_admin, tenant_a, monkeypatch):
    monkeypatch.setattr(call_selectors, "PAGE_SIZE", 2)
    now = timezone.now()
    for i in range(3):
        call(tenant_a, at=now - timedelta(seconds=i))
    first = as_admin.get(reverse("panel:logs")).context["page"]
    assert first.newer is None and first.older
    second = as_admin.get(reverse("panel:logs"), {"older": first.older})
    page = second.context["page"]
    assert page.older is None and page.newer
    assert b"Older" not in second.content and b"Newer" in second.content


def test_a_cursor_keeps_its_microseconds():
    at = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    cursor = call_selectors.Cursor(at, 77)
    assert call_selectors.Cursor.parse(str(cursor)) == cursor
    for junk in ("", "abc", "1.", ".5", "1.2.3", "9" * 30 + ".1", "-5.3"):
        assert call_selectors.Cursor.parse(junk) is None


def test_a_hand_edited_cursor_shows_the_first_page(as_admin, tenant_a):
    call(tenant_a, at=timezone.now())
    response = as_admin.get(reverse("panel:logs"), {"older": "nonsense\x00"})
    assert response.status_code == 200
    assert len(response.context["page"].rows) == 1


# --- filters --------------------------------------------------------------------------------


@pytest.fixture
def mixed(tenant_a, tenant_b):
    """Calls of two orgs' teams over two days, with different models, groups and statuses."""
    from teams.services import key_create

    now = timezone.now()
    other_key, _ = key_create(actor="test", team=tenant_a.team, name="second")
    rows = {
        "a_ok": call(tenant_a, at=now - timedelta(minutes=1)),
        "a_err": call(tenant_a, at=now - timedelta(minutes=2), status="error", model="gpt-b"),
        "a_other_key": call(tenant_a, at=now - timedelta(minutes=3), key=False, group="slow"),
        "a_old": call(tenant_a, at=now - timedelta(hours=30), status="rejected"),
        "b_ok": call(tenant_b, at=now - timedelta(minutes=4), group="slow"),
        "b_int": call(tenant_b, at=now - timedelta(minutes=5), status="interrupted"),
    }
    rows["a_other_key"].key = other_key
    rows["a_other_key"].save(update_fields=["key"])
    return {"rows": rows, "tenants": (tenant_a, tenant_b), "now": now, "other_key": other_key}


def shown(client, **query) -> set[str]:
    response = client.get(reverse("panel:logs"), query)
    assert response.status_code == 200, response.content
    return set(ids(response.context["page"].rows))


def test_each_filter_shows_exactly_its_calls(as_admin, mixed):
    r = {name: row.request_id for name, row in mixed["rows"].items()}
    a, b = mixed["tenants"]
    recent = {r[n] for n in r if n != "a_old"}
    # the default range is the last 24 hours
    assert shown(as_admin) == recent
    assert shown(as_admin, organization=a.org.public_id) == {
        r["a_ok"],
        r["a_err"],
        r["a_other_key"],
    }
    assert shown(as_admin, team=b.team.public_id) == {r["b_ok"], r["b_int"]}
    assert shown(as_admin, key=a.key.public_id) == {r["a_ok"], r["a_err"]}
    assert shown(as_admin, key=mixed["other_key"].public_id) == {r["a_other_key"]}
    assert shown(as_admin, model="gpt-b") == {r["a_err"]}
    assert shown(as_admin, model_group="slow") == {r["a_other_key"], r["b_ok"]}
    assert shown(as_admin, status="error") == {r["a_err"]}
    assert shown(as_admin, status="interrupted") == {r["b_int"]}
    assert shown(as_admin, team=a.team.public_id, model_group="slow") == {r["a_other_key"]}
    # a range reaches back further; its end is exclusive
    start = (mixed["now"] - timedelta(hours=31)).strftime("%Y-%m-%dT%H:%M")
    end = (mixed["now"] - timedelta(hours=29)).strftime("%Y-%m-%dT%H:%M")
    assert shown(as_admin, start=start, end=end) == {r["a_old"]}
    assert shown(as_admin, start=start, status="rejected") == {r["a_old"]}
    # a request id is found whatever its age, the other filters aside
    assert shown(as_admin, request_id=r["a_old"], team=b.team.public_id) == {r["a_old"]}
    assert shown(as_admin, request_id="req-nobody") == set()


def test_bad_filters_say_what_is_wrong(as_admin, mixed):
    response = as_admin.get(reverse("panel:logs"), {"team": "team_nope", "start": "yesterday"})
    assert response.status_code == 400
    assert b"No team with id team_nope." in response.content
    assert b"Enter a valid date/time." in response.content
    backwards = as_admin.get(
        reverse("panel:logs"), {"start": "2026-02-02T00:00", "end": "2026-02-01T00:00"}
    )
    assert backwards.status_code == 400
    assert b"Must be before the end of the range." in backwards.content
    nul = as_admin.get(reverse("panel:logs"), {"model": "a\x00b"})
    assert nul.status_code == 400


def test_the_logs_page_shows_the_columns_and_links_to_each_call(as_admin, tenant_a):
    record = call(
        tenant_a,
        at=timezone.now(),
        input_tokens=12_345,
        cache_read_tokens=2_000,
        reasoning_tokens=7,
    )
    html = as_admin.get(reverse("panel:logs")).content.decode()
    assert reverse("panel:call_detail", args=[record.request_id]) in html
    assert "12,345 / 20" in html
    assert "cached read 2,000" in html and "reasoning 7" in html
    assert "cache write" not in html  # zero counts are left out
    assert "0.0015" in html and "0.0007" in html  # price in credits, cost in dollars
    assert tenant_a.key.name in html and "42 ms" in html


def test_every_call_row_of_the_panel_links_to_the_call(as_admin, tenant_a):
    from tests.helpers.tenants import add_call_history

    job, record = add_call_history(tenant_a)
    link = reverse("panel:call_detail", args=[record.request_id]).encode()
    for url in (
        reverse("panel:usage"),
        reverse("panel:key_detail", args=[tenant_a.key.public_id]),
        reverse("panel:job_detail", args=[job.public_id]),
        reverse("panel:logs"),
    ):
        assert link in as_admin.get(url).content, url


# --- every filter uses an index --------------------------------------------------------------


def test_every_filter_combination_reads_through_an_index(tenant_a, tenant_b):
    # given a few hundred thousand calls over 20 days, spread over two orgs and three keys
    from teams.services import key_create

    spare, _ = key_create(actor="test", team=tenant_b.team, name="spare")
    teams = [
        (tenant_a.org.pk, tenant_a.team.pk, tenant_a.key.pk),
        (tenant_b.org.pk, tenant_b.team.pk, tenant_b.key.pk),
    ]
    teams.append((tenant_b.org.pk, tenant_b.team.pk, spare.pk))
    now = timezone.now()
    with connection.cursor() as cursor:
        for i, (org, team, key) in enumerate(teams):
            cursor.execute(
                """
                INSERT INTO billing_usagerecord (request_id, organization_id, team_id, key_id,
                    model, model_group, input_tokens, output_tokens, cost_micros, price_micros,
                    status, cache_hit, created_at)
                SELECT 'gen-' || %s || '-' || n, %s, %s, %s, 'model-' || (n %% 7),
                    'group-' || (n %% 3), 10, 20, 1, 2,
                    (ARRAY['ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'error', 'rejected',
                        'interrupted'])[1 + n %% 10],
                    false, %s - (n * interval '17 seconds')
                FROM generate_series(1, 100000) AS n
                """,
                [i, org, team, key, now],
            )
        cursor.execute("ANALYZE billing_usagerecord")
    day_ago = now - timedelta(hours=24)
    cursor_row = call_selectors.Cursor(now - timedelta(hours=3), 10**9)
    combos = [
        {},
        {"organization": tenant_a.org},
        {"team": tenant_b.team},
        {"key": spare},
        {"model": "model-3"},
        {"model_group": "group-1"},
        {"status": "interrupted"},
        {"team": tenant_a.team, "model": "model-2", "status": "error"},
        {"key": tenant_a.key, "model_group": "group-2"},
        {"organization": tenant_b.org, "status": "rejected"},
    ]
    plans = {}
    for scope in combos:
        for bounds in ({"start": day_ago}, {"start": now - timedelta(days=59), "end": now}):
            records = call_selectors.call_records(**bounds, **scope)
            for page_args in ({}, {"older_than": cursor_row}, {"newer_than": cursor_row}):
                plans[(str(scope), str(bounds), str(page_args))] = _plan(records, page_args)
    plans["request id"] = _plan(call_selectors.call_records(request_id="gen-1-500"), {})
    # then none reads a whole partition that holds calls (an empty one costs nothing; the
    # small tables joined in for names are looked up by key or read whole, as is cheapest)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relname LIKE 'billing_usagerecord%%'"
            " AND relkind = 'r' AND reltuples > 0"
        )
        filled = {name for (name,) in cursor.fetchall()}
    assert len(filled) >= 2  # the default partition (past months) and this month's
    seq = {
        name: plan
        for name, plan in plans.items()
        if set(re.findall(r"Seq Scan on (billing_usagerecord\w*)", plan)) & filled
    }
    assert not seq, "\n\n".join(f"{n}\n{p}" for n, p in seq.items())
    assert "request_id_created_at" in plans["request id"]  # the unique (request_id, created_at)


def _plan(records, page_args) -> str:
    return call_selectors.page_query(records, **page_args).explain()


# --- one call -------------------------------------------------------------------------------


def test_a_call_without_logged_bodies_shows_its_figures(as_admin, tenant_a):
    from tests.helpers.tenants import add_call_history

    job, record = add_call_history(tenant_a)
    UsageRecord.objects.filter(pk=record.pk).update(
        input_tokens=1_200,
        output_tokens=30,
        cache_read_tokens=1_000,
        audio_ms=2_500,
        price_micros=1_234_567,
        cost_micros=456,
        latency_ms=1_250,
        status="rejected",
    )
    response = as_admin.get(reverse("panel:call_detail", args=[record.request_id]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "1,200 / 30" in html and "1,250 ms" in html
    assert "Cached read</dt><dd>1,000" in html and "Audio ms</dt><dd>2,500" in html
    assert "Reasoning" not in html
    assert "1.234567" in html and "0.000456" in html
    assert reverse("panel:job_detail", args=[job.public_id]) in html
    assert reverse("panel:key_detail", args=[tenant_a.key.public_id]) in html
    assert reverse("panel:team_detail", args=[tenant_a.team.public_id]) in html
    assert "No bodies logged" in html and "rejected" in html


def test_an_unknown_call_is_a_clear_404(as_admin, db):
    response = as_admin.get(reverse("panel:call_detail", args=["req-never"]))
    assert response.status_code == 404
    assert b"No call with request id req-never" in response.content


def _chunk(delta: str, finish: str | None = None) -> str:
    choice = {"index": 0, "delta": orjson.loads(delta), "finish_reason": finish}
    body = {"id": "c1", "object": "chat.completion.chunk", "choices": [choice]}
    return f"data: {orjson.dumps(body).decode()}\n\n"


SSE = (
    _chunk('{"role": "assistant", "content": ""}')
    + _chunk('{"content": "Hello, "}')
    + _chunk('{"content": "<b>world</b>"}')
    + _chunk("{}", "stop")
    + "data: [DONE]\n\n"
)


def test_a_logged_stream_is_shown_as_the_text_the_client_saw(as_admin, tenant_a):
    _, record = add_logged(tenant_a, '{"model":"fast","stream":true}', SSE)
    response = as_admin.get(reverse("panel:call_detail", args=[record.request_id]))
    html = response.content.decode()
    assert response.context["detail"].stream_text == "Hello, <b>world</b>"
    assert '<pre class="answer" id="call-stream">Hello, &lt;b&gt;world&lt;/b&gt;</pre>' in html
    assert "Raw stream frames" in html and "chat.completion.chunk" in html
    assert "&quot;stream&quot;: true" in html  # the request, pretty-printed (and escaped)


def test_a_logged_answer_that_is_no_stream_is_shown_raw(as_admin, tenant_a):
    _, record = add_logged(tenant_a, "not json {", '{"error":{"code":"upstream_error"}}')
    response = as_admin.get(reverse("panel:call_detail", args=[record.request_id]))
    assert response.context["detail"].stream_text is None
    html = response.content.decode()
    assert "not json {" in html and "&quot;code&quot;: &quot;upstream_error&quot;" in html
    assert "Raw stream frames" not in html


def test_stream_text_reads_chat_and_anthropic_streams_and_gives_up_on_anything_else():
    assert call_selectors.stream_text(SSE) == "Hello, <b>world</b>"
    anthropic = (
        'event: message_start\ndata: {"type":"message_start","message":{}}\n\n'
        "event: content_block_delta\n"
        'data: {"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi"}}\n\n'
        'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    assert call_selectors.stream_text(anthropic) == "Hi"
    assert call_selectors.stream_text('{"choices":[]}') is None
    assert call_selectors.stream_text('data: {"object":"chat.completion.chunk"\n') is None  # cut
    assert call_selectors.stream_text("data: [DONE]\n") is None


def add_logged(tenant, request_body, response_body):
    from tests.helpers.tenants import add_call_history

    job, record = add_call_history(tenant)
    CallLog.objects.create(
        request_id=record.request_id,
        team=tenant.team,
        request_body=request_body,
        response_body=response_body,
        created_at=record.created_at,
        expires_at=record.created_at + timedelta(days=7),
    )
    return job, record


def test_a_stream_through_the_gateway_is_joined_on_its_page(live, mock_catalog, gw_org):
    # given a team that logs bodies, and a streamed chat call through the real gateway
    team = GatewayTenant(
        "logging", gw_org, [mock_catalog["groups"]["chat"]], 100_000_000, log_bodies=True
    )
    seen = []
    with httpx.stream(
        "POST",
        f"{live.url}/v1/chat/completions",
        json={
            "model": "chat",
            "stream": True,
            "messages": [{"role": "user", "content": "hi there"}],
        },
        headers=team.headers(),
        timeout=30,
    ) as streamed:
        for line in streamed.iter_lines():
            if line.startswith("data: {"):
                for choice in orjson.loads(line[6:])["choices"]:
                    seen.append(choice["delta"].get("content") or "")
    settlement.settle_usage()
    # when the admin opens the call
    client = logged_in(make_user("alice", "admin"))
    response = client.get(reverse("panel:call_detail", args=[streamed.headers["x-request-id"]]))
    # then the page shows what the client read
    assert response.status_code == 200
    assert "".join(seen).startswith("Mock reply to: hi there")
    assert response.context["detail"].stream_text == "".join(seen)


# --- models' health ---------------------------------------------------------------------------


def badge(html: str, model: str) -> str:
    """The health badge the model list shows for the model."""
    found = re.search(rf'data-health="{model}"[^>]*>([^<]*)<', html)
    assert found, model
    return found.group(1)


def test_check_now_probes_the_model_and_records_its_health(live, mock_catalog):
    # given an admin, a model that answers and one whose upstream model fails with 500
    client = logged_in(make_user("alice", "admin"))
    good, bad = mock_catalog["models"]["a"], mock_catalog["models"]["bad"]
    # when both are checked
    ok = client.post(reverse("panel:model_check", args=[good.public_id]), follow=True)
    failed = client.post(reverse("panel:model_check", args=[bad.public_id]), follow=True)
    # then each verdict is stored and said, and the list shows it
    assert ModelHealth.objects.get(pk=good.pk).status == "up"
    down = ModelHealth.objects.get(pk=bad.pk)
    assert down.status == "down" and down.checked_at is not None and down.last_error
    assert ok.redirect_chain[-1][0] == reverse("panel:model_list")
    assert b"mock-a is up: it answered in" in ok.content
    assert b"mock-bad is down" in failed.content
    html = failed.content.decode()
    assert badge(html, "mock-bad") == "down" and badge(html, "mock-a") == "up"
    assert "ago</time>" in html
    assert badge(html, "mock-b") == "unknown"  # never probed
    assert "sk-upstream-provider-secret-123456" not in html
    # and the dashboard lists the model that is down, with its error
    dashboard = client.get(reverse("panel:dashboard")).content.decode()
    assert 'id="down-models"' in dashboard and "mock-bad" in dashboard
    assert "mock-a</code>" not in dashboard.split('id="down-models"')[1].split("</section>")[0]


def test_check_now_is_refused_for_a_disabled_model(as_admin, catalog_objects):
    model = catalog_objects["fallback"]
    catalog.model_update(actor="test", model=model, data={"enabled": False})
    response = as_admin.post(reverse("panel:model_check", args=[model.public_id]), follow=True)
    assert b"gpt-b is disabled" in response.content and b"Enable it" in response.content
    assert not ModelHealth.objects.filter(pk=model.pk, checked_at__isnull=False).exists()


def test_a_long_error_is_truncated_with_the_whole_text_at_hand(as_admin, catalog_objects):
    model = catalog_objects["primary"]
    error = "upstream said: " + "x" * 200
    ModelHealth.objects.create(
        model=model,
        status="down",
        last_error=error,
        checked_at=timezone.now(),
        status_since=timezone.now() - timedelta(minutes=3),
        latency_ms=1_500,
    )
    html = as_admin.get(reverse("panel:model_list")).content.decode()
    assert f'title="{error}"' in html and f"<code>{error}</code>" in html
    assert "1,500 ms" in html and "down since " in html
    dashboard = as_admin.get(reverse("panel:dashboard")).content.decode()
    assert "1 model down" in dashboard and "3\xa0minutes ago" in dashboard


def test_the_dashboard_says_nothing_of_models_when_none_is_down(as_admin, catalog_objects):
    ModelHealth.objects.create(model=catalog_objects["primary"], status="up")
    assert b'id="down-models"' not in as_admin.get(reverse("panel:dashboard")).content
