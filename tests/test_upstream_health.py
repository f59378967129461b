"""Upstream health: probes record and publish verdicts, the gateway's circuit breaker routes
around models marked down (by a probe or by its own failed attempts) and tries them again after
the cooldown. Real Postgres and Redis, the live gateway and the mock upstream, whose model-name
knobs make models fail (fail-500), hang (slow-N) or echo their key (echo-auth)."""

import time

import httpx
import orjson
import pytest

from core.redis import client as redis_client
from livestate.keys import HEALTH
from mirrors import gateway as gateway_state
from modelgroups import services as catalog
from modelgroups.models import Model, ModelHealth, Upstream
from modelgroups.tasks import probe_models
from proxy.breaker import Breaker
from tests.helpers.api import MASTER, client_with
from tests.helpers.tenants import GatewayTenant, db_state
from tests.helpers.threads import race
from tests.helpers.waiting import eventually

PROVIDER_KEY = "sk-upstream-provider-secret-123456"  # the mock upstream's key (conftest)
CHAT = {"messages": [{"role": "user", "content": "hi"}]}
# A model that is tried shows in the call's latency: it answers 500 after this long.
SLOW_FAIL_S = 1.0
# The gateway follows changes every 0.2 s, so a published verdict normally arrives in well
# under a second: it must within this long.
LEARN_S = 2.0


@pytest.fixture(autouse=True)
def _breaker_settings(settings):
    """A breaker that trips after 3 failures and cools down in 2 s. Autouse, so it is set
    before `live` starts the gateway, which reads the settings once."""
    settings.GATEWAY_BREAKER_FAILURES = 3
    settings.GATEWAY_BREAKER_COOLDOWN_SECONDS = 2.0


def model(upstream, name, upstream_model, **fields):
    return catalog.model_create(
        actor="test",
        name=name,
        upstream=upstream,
        upstream_model=upstream_model,
        input_price_micros=1_000_000,
        output_price_micros=1_000_000,
        max_output_tokens=50,
        **fields,
    )


def group(name, *models):
    return catalog.model_group_create(
        actor="test", name=name, members=[{"model": m} for m in models]
    )


def chat(live, tenant, model_name, **extra):
    started = time.monotonic()
    r = httpx.post(
        f"{live.url}/v1/chat/completions",
        headers=tenant.headers(),
        json={"model": model_name, **CHAT, **extra},
        timeout=30,
    )
    return r, time.monotonic() - started


def breaker(live) -> Breaker:
    return live.gateway.replica.breaker


def health_by_name() -> dict[str, ModelHealth]:
    return {h.model.name: h for h in ModelHealth.objects.select_related("model")}


@pytest.fixture
def guarded(mock_catalog, gw_org):
    """Group `guarded`: a model that fails slowly, then mock-b; a tenant that may call it."""
    up = mock_catalog["upstream"]
    slow_bad = model(up, "mock-slow-bad", f"mock-slow-{int(SLOW_FAIL_S * 1000)}-fail-500")
    guarded = group("guarded", slow_bad, mock_catalog["models"]["b"])
    tenant = GatewayTenant(
        "health team",
        gw_org,
        [guarded, mock_catalog["groups"]["broken"]],
        credits_micros=100_000_000,
    )
    return {"model": slow_bad, "group": guarded, "tenant": tenant}


# --- probes --------------------------------------------------------------------------------


def test_probe_marks_a_failing_model_down_and_a_working_one_up(live, mock_catalog):
    # when
    probed = probe_models()
    # then: every enabled model was probed once (chat: a one-token call; embedding: one word)
    assert probed == 5
    health = health_by_name()
    for working in ("mock-a", "mock-b", "mock-embed"):
        assert health[working].status == "up", health[working].last_error
        assert health[working].last_error == ""
        assert health[working].latency_ms is not None
        assert health[working].checked_at is not None
    assert health["mock-bad"].status == "down"
    assert health["mock-bad"].last_error.startswith("HTTP 500: ")
    assert health["mock-bad-503"].status == "down"
    # and the admin API shows it on the model list and detail
    api = client_with(MASTER)
    listed = {m["name"]: m["health"] for m in api.get("/api/models/").json()["results"]}
    assert listed["mock-a"]["status"] == "up"
    assert listed["mock-bad"]["status"] == "down"
    assert set(listed["mock-bad"]) == {
        "status",
        "latency_ms",
        "last_error",
        "checked_at",
        "status_since",
    }
    bad_id = mock_catalog["models"]["bad"].public_id
    detail = api.get(f"/api/models/{bad_id}/").json()["health"]
    assert detail["status"] == "down" and "HTTP 500" in detail["last_error"]


def test_a_model_never_probed_shows_unknown_health(api, catalog_objects):
    response = api.get(f"/api/models/{catalog_objects['primary'].public_id}/")
    assert response.json()["health"] == {
        "status": "unknown",
        "latency_ms": None,
        "last_error": "",
        "checked_at": None,
        "status_since": None,
    }


def test_a_hung_model_times_out_without_holding_up_the_others(live, mock_catalog, settings):
    # given: a model that answers after 3 s; probes may take 0.5 s
    settings.HEALTH_PROBE_TIMEOUT_SECONDS = 0.5
    model(mock_catalog["upstream"], "mock-hung", "mock-slow-3000")
    started = time.monotonic()
    # when
    probe_models()
    # then: the round did not wait for it, and the rest got their verdicts
    elapsed = time.monotonic() - started
    health = health_by_name()
    assert health["mock-hung"].status == "down"
    assert health["mock-hung"].last_error == "timed out after 0.5s"
    assert health["mock-a"].status == "up" and health["mock-bad"].status == "down"
    assert elapsed < 2.5


def test_a_slow_answer_is_degraded_and_a_throttled_model_too(live, mock_catalog, settings):
    settings.HEALTH_PROBE_SLOW_MS = 200
    up = mock_catalog["upstream"]
    model(up, "mock-sluggish", "mock-slow-400")
    model(up, "mock-throttled", "mock-fail-429")
    probe_models()
    health = health_by_name()
    assert health["mock-sluggish"].status == "degraded"
    assert health["mock-sluggish"].last_error.startswith("slow: answered in ")
    assert health["mock-throttled"].status == "degraded"
    assert health["mock-throttled"].last_error.startswith("HTTP 429: ")


def test_overlapping_rounds_probe_each_model_once(live, mock_catalog):
    # given: two workers start a round at the same moment

    def round_(_):
        return probe_models()

    # when
    counts = race(round_, 2)
    # then: the claims split the work; a third round right after finds nothing due
    assert sorted(counts)[1] > 0 and sum(counts) == 5
    assert probe_models() == 0
    assert ModelHealth.objects.filter(checked_at__isnull=True).count() == 0


def test_models_are_due_again_after_half_an_interval(live, mock_catalog, settings):
    settings.HEALTH_PROBE_INTERVAL_SECONDS = 0  # claims expire at once
    assert probe_models() == 5
    assert probe_models() == 5


def test_an_upstream_set_to_models_is_checked_with_one_model_list(live, mock_catalog):
    # given: an upstream whose probe is its model list (the mock lists mock-chat only)
    lister = catalog.upstream_create(
        actor="test",
        name="lister",
        kind="mock",
        base_url=live.mock_url,
        api_key=PROVIDER_KEY,
        health_check=Upstream.HealthCheck.MODELS,
    )
    model(lister, "listed", "mock-chat")
    model(lister, "unlisted", "mock-fail-500")  # not listed; a call would fail, a list cannot
    # when
    probe_models()
    # then
    health = health_by_name()
    assert health["listed"].status == "up"
    assert health["unlisted"].status == "degraded"
    assert health["unlisted"].last_error == "'mock-fail-500' is not in the upstream's model list"


def test_turning_an_upstreams_probe_off_forgets_its_verdicts(live, mock_catalog, settings):
    # given: mock-bad marked down, and the gateway knows it
    settings.HEALTH_PROBE_INTERVAL_SECONDS = 0
    probe_models()
    bad = mock_catalog["models"]["bad"].public_id
    eventually(lambda: breaker(live).is_open(bad), timeout=LEARN_S, interval=0.02)
    # when: the operator turns the upstream's probe off
    catalog.upstream_update(
        actor="test", upstream=mock_catalog["upstream"], data={"health_check": "off"}
    )
    assert probe_models() == 0
    # then: unknown, and the gateway stops skipping it
    assert {h.status for h in ModelHealth.objects.all()} == {"unknown"}
    eventually(lambda: not breaker(live).is_open(bad), timeout=LEARN_S, interval=0.02)


def test_the_beat_schedule_runs_the_probe_task():
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["probe-models"]
    assert entry["task"] == probe_models.name
    assert entry["schedule"] == settings.HEALTH_PROBE_INTERVAL_SECONDS


def test_a_full_republish_carries_the_health(live, mock_catalog):
    # given
    probe_models()
    redis = redis_client()
    # when: Redis loses everything and the state is rebuilt from Postgres
    redis.flushdb()
    gateway_state.publish_all()
    # then
    bad = mock_catalog["models"]["bad"].public_id
    assert orjson.loads(redis.hget(HEALTH, bad))["status"] == "down"


# --- the gateway's circuit breaker -----------------------------------------------------------


def test_the_gateway_routes_around_a_model_the_probe_marked_down(live, guarded):
    tenant, slow_bad = guarded["tenant"], guarded["model"]
    # given: before any probe, the failing model is tried first (it costs its latency)
    r, took = chat(live, tenant, "guarded")
    assert r.status_code == 200 and r.headers["x-tollgate-model"] == "mock-b"
    assert took >= SLOW_FAIL_S
    # when: the probe marks it down
    probe_models()
    assert ModelHealth.objects.get(pk=slow_bad.pk).status == "down"
    asked = time.monotonic()
    eventually(lambda: breaker(live).is_open(slow_bad.public_id), timeout=LEARN_S, interval=0.02)
    learned_in = time.monotonic() - asked
    # then: the healthy model answers first and the failing one is not tried
    r, took = chat(live, tenant, "guarded")
    assert r.status_code == 200 and r.headers["x-tollgate-model"] == "mock-b"
    assert took < SLOW_FAIL_S
    assert learned_in < 2.0


def test_after_the_cooldown_one_request_tries_the_model_again(live, guarded):
    tenant, slow_bad = guarded["tenant"], guarded["model"]
    probe_models()
    eventually(lambda: breaker(live).is_open(slow_bad.public_id), timeout=LEARN_S, interval=0.02)
    assert chat(live, tenant, "guarded")[1] < SLOW_FAIL_S
    # when: the cooldown passes
    eventually(lambda: not breaker(live).is_open(slow_bad.public_id), timeout=3, interval=0.02)
    # then: the next call tries it again (its latency shows), it still fails, and the call
    # after that skips it for another cooldown
    r, took = chat(live, tenant, "guarded")
    assert r.status_code == 200 and r.headers["x-tollgate-model"] == "mock-b"
    assert took >= SLOW_FAIL_S
    assert breaker(live).is_open(slow_bad.public_id)
    assert chat(live, tenant, "guarded")[1] < SLOW_FAIL_S


def test_a_successful_trial_after_the_cooldown_closes_the_breaker(live, mock_catalog, gw_org):
    # given: a model the probe marked down, then repaired by the operator before a new probe
    up = mock_catalog["upstream"]
    flaky = model(up, "mock-repaired", "mock-fail-500")
    repaired = group("repaired", flaky, mock_catalog["models"]["b"])
    tenant = GatewayTenant("repair team", gw_org, [repaired], credits_micros=10_000_000)
    probe_models()
    eventually(lambda: breaker(live).is_open(flaky.public_id), timeout=LEARN_S, interval=0.02)
    assert chat(live, tenant, "repaired")[0].headers["x-tollgate-model"] == "mock-b"
    catalog.model_update(actor="test", model=flaky, data={"upstream_model": "mock-a"})
    # when: the cooldown passes
    eventually(lambda: not breaker(live).is_open(flaky.public_id), timeout=3, interval=0.02)
    # then: the trial succeeds and the model serves first again
    for _ in range(2):
        r, _ = chat(live, tenant, "repaired")
        assert r.status_code == 200 and r.headers["x-tollgate-model"] == "mock-repaired"
    assert not breaker(live).is_open(flaky.public_id)


def test_consecutive_live_failures_trip_the_breaker_between_probes(live, guarded):
    tenant, slow_bad = guarded["tenant"], guarded["model"]
    # when: three calls (two unary, one streamed) each fail on the model, then fall back
    for extra in ({}, {"stream": True}, {}):
        r, took = chat(live, tenant, "guarded", **extra)
        assert r.status_code == 200 and took >= SLOW_FAIL_S
        assert r.headers["x-tollgate-model"] == "mock-b"
    # then: no probe ran, yet the fourth call skips it
    assert not ModelHealth.objects.exists()
    assert breaker(live).is_open(slow_bad.public_id)
    r, took = chat(live, tenant, "guarded")
    assert r.status_code == 200 and r.headers["x-tollgate-model"] == "mock-b"
    assert took < SLOW_FAIL_S


def test_a_success_resets_the_count_of_consecutive_failures():
    # given
    b = Breaker(threshold=3, cooldown=60)
    for outcome in ("failed", "failed", "succeeded", "failed", "failed"):
        getattr(b, outcome)("m1")
    # then: never three in a row
    assert not b.is_open("m1")
    b.failed("m1")
    assert b.is_open("m1")


def test_a_group_whose_models_are_all_down_still_tries_them(live, mock_catalog, guarded):
    # given: both models of `broken` marked down
    probe_models()
    bad, bad2 = (m.public_id for m in Model.objects.filter(name__in=["mock-bad", "mock-bad-503"]))
    eventually(
        lambda: breaker(live).is_open(bad) and breaker(live).is_open(bad2),
        timeout=LEARN_S,
        interval=0.02,
    )
    # when
    r, _ = chat(live, guarded["tenant"], "broken")
    # then: both were tried, and the error says so
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["code"] == "upstream_error"
    assert "mock-bad: HTTP 500" in error["message"] and "mock-bad-503: HTTP 503" in error["message"]


def test_a_group_whose_models_are_all_marked_down_answers_from_one_that_works(
    live, mock_catalog, gw_org
):
    # given: two models marked down; the second one has recovered since
    up = mock_catalog["upstream"]
    first = model(up, "mock-down-1", "mock-fail-500")
    second = model(up, "mock-down-2", "mock-fail-503")
    both = group("both-down", first, second)
    tenant = GatewayTenant("down team", gw_org, [both], credits_micros=10_000_000)
    probe_models()
    catalog.model_update(actor="test", model=second, data={"upstream_model": "mock-b"})
    eventually(lambda: breaker(live).is_open(first.public_id), timeout=LEARN_S, interval=0.02)
    eventually(lambda: breaker(live).is_open(second.public_id), timeout=LEARN_S, interval=0.02)
    time.sleep(0.5)  # the catalog change (the repaired upstream model) reaches the gateway
    # when
    r, _ = chat(live, tenant, "both-down")
    # then: the gateway did not give up without a call
    assert r.status_code == 200, r.text
    assert r.headers["x-tollgate-model"] == "mock-down-2"


def test_probe_verdicts_act_on_changes_only():
    b = Breaker(threshold=3, cooldown=60)
    b.probed("m1", "down")
    assert b.is_open("m1")
    # live traffic closes it (a successful trial) ...
    b.succeeded("m1")
    assert not b.is_open("m1")
    # ... and the same verdict again does not reopen it; a change does
    b.probed("m1", "down")
    assert not b.is_open("m1")
    b.probed("m1", "up")
    b.probed("m1", "down")
    assert b.is_open("m1")


def test_open_routes_go_last_and_one_request_is_the_trial():
    class R:
        def __init__(self, id_):
            self.id = id_

    a, b, c = R("a"), R("b"), R("c")
    breaker_ = Breaker(threshold=1, cooldown=0.05)
    routes = [a, b, c]
    assert breaker_.order(routes) is routes  # nothing open: the same list, no work
    breaker_.failed("a")
    assert breaker_.order(routes) == [b, c, a]
    time.sleep(0.06)
    assert breaker_.order(routes) == [a, b, c]  # half-open: this request tries it
    assert breaker_.order(routes) == [b, c, a]  # the next one does not


# --- secrets and the check endpoint ------------------------------------------------------------


def test_health_never_shows_the_provider_key(live, mock_catalog, gw_org):
    # given: a provider that echoes the key it was sent in its error
    leaky = model(mock_catalog["upstream"], "mock-leaky", "mock-echo-auth")
    # when
    probe_models()
    checked = client_with(MASTER).post(f"/api/models/{leaky.public_id}/check/")
    # then
    health = ModelHealth.objects.get(pk=leaky.pk)
    assert health.status == "down"
    assert health.last_error == "HTTP 401: Incorrect API key provided: Bearer [redacted]."
    outputs = [
        checked.content,
        client_with(MASTER).get("/api/models/").content,
        client_with(MASTER).get(f"/api/models/{leaky.public_id}/").content,
        *redis_client().hgetall(HEALTH).values(),
    ]
    for output in outputs:
        assert PROVIDER_KEY.encode() not in output
        assert b"upstream-provider-secret" not in output


def test_check_probes_now_and_the_gateway_learns_the_verdict(live, mock_catalog):
    bad = mock_catalog["models"]["bad"]
    # when
    response = client_with(MASTER).post(f"/api/models/{bad.public_id}/check/")
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "down" and body["last_error"].startswith("HTTP 500: ")
    assert body["checked_at"] is not None and body["latency_ms"] is not None
    assert ModelHealth.objects.get(pk=bad.pk).status == "down"
    eventually(lambda: breaker(live).is_open(bad.public_id), timeout=LEARN_S, interval=0.02)


def test_check_works_for_a_disabled_model_on_an_upstream_not_probed(live, mock_catalog):
    # given: the operator is about to enable a new model on an upstream with probes off
    up = mock_catalog["upstream"]
    catalog.upstream_update(actor="test", upstream=up, data={"health_check": "off"})
    new = model(up, "mock-new", "mock-new", enabled=False)
    # when
    response = client_with(MASTER).post(f"/api/models/{new.public_id}/check/")
    # then
    assert response.status_code == 200
    assert response.json()["status"] == "up"


def test_check_reports_an_unreachable_upstream(api, catalog_objects):
    # catalog_objects' upstream is 127.0.0.1:9 (discard): nothing listens there
    response = api.post(f"/api/models/{catalog_objects['primary'].public_id}/check/")
    assert response.status_code == 200
    assert response.json()["status"] == "down"
    assert response.json()["last_error"].startswith("connection failed")


def test_only_the_platform_admin_may_run_a_check(api, tenant_a, tenant_b, catalog_objects):
    path = f"/api/models/{catalog_objects['primary'].public_id}/check/"
    before = db_state()
    # when: an org-scoped admin of either org, or no key at all
    refused = [tenant_a.client.post(path), tenant_b.client.post(path), client_with(None).post(path)]
    # then: refused, nothing probed or recorded
    assert [r.status_code for r in refused] == [403, 403, 401]
    assert db_state() == before
    # while the platform admin may
    assert api.post(path).status_code == 200
    assert ModelHealth.objects.filter(model=catalog_objects["primary"]).exists()


def test_scoped_admins_read_health_on_the_shared_catalog(api, tenant_a, catalog_objects):
    api.post(f"/api/models/{catalog_objects['primary'].public_id}/check/")
    listed = tenant_a.client.get("/api/models/").json()["results"]
    health = {m["name"]: m["health"]["status"] for m in listed}
    assert health == {"gpt-a": "down", "gpt-b": "unknown"}


def test_image_and_audio_models_are_listed_not_called_and_anthropic_models_are_called(
    live, mock_catalog
):
    # given: an image model whose call would fail (a one-token chat call is no image), and a
    # model of an Anthropic upstream (the mock speaks Messages too)
    image = model(mock_catalog["upstream"], "mock-image", "mock-fail-500", mode="image")
    claude_up = catalog.upstream_create(
        actor="test", name="claude", kind="anthropic", base_url=mock_catalog["upstream"].base_url
    )
    claude = model(claude_up, "claude-x", "mock-a")
    # when
    probe_models()
    # then: the image model was looked up in the model list, not called
    health = health_by_name()
    assert health["mock-image"].status == "degraded"
    assert "not in the upstream's model list" in health["mock-image"].last_error
    # and the Anthropic one was called in its own API (the mock refuses a Messages call
    # without anthropic-version), and can be checked by hand
    assert health["claude-x"].status == "up", health["claude-x"].last_error
    response = client_with(MASTER).post(f"/api/models/{claude.public_id}/check/")
    assert response.status_code == 200 and response.json()["status"] == "up"
    assert image.pk in set(ModelHealth.objects.values_list("pk", flat=True))
