"""Jobs at the gateway and the pricing modes: what a team is charged, and what it cost us."""

import asyncio

import httpx
import pytest
from django.db.models import Sum

from billing import settlement
from billing.models import Job, LedgerEntry, UsageRecord
from core.redis import client as redis_client
from livestate.keys import SHARD_RANGE, job_key, open_jobs_key, shard_of, usage_stream
from tests.helpers.api import MASTER, client_with
from tests.helpers.gateway import redis_account
from tests.helpers.tenants import GatewayTenant

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 30}
# The mock's reply to CHAT: 4 prompt tokens, 24 completion tokens. Catalog prices: 1 credit
# per 1M input tokens, 2 per 1M output; costs: 0.5 USD and 1 USD per 1M.
PROMPT_T, COMPLETION_T = 4, 24
CALL_PRICE = PROMPT_T * 1 + COMPLETION_T * 2  # micro-credits
CALL_COST = PROMPT_T // 2 + COMPLETION_T  # micro-USD


def post(live, tenant, path, json=None, headers=None) -> httpx.Response:
    return httpx.post(
        f"{live.url}{path}", json=json, headers={**tenant.headers(), **(headers or {})}, timeout=30
    )


def get(live, tenant, path) -> httpx.Response:
    return httpx.get(f"{live.url}{path}", headers=tenant.headers(), timeout=30)


def open_job(live, tenant, job_type="summarize", **extra) -> dict:
    response = post(live, tenant, "/v1/jobs", {"type": job_type, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def entries(team, kind):
    return LedgerEntry.objects.filter(account__team=team, kind=kind)


@pytest.fixture
def tenant(mock_catalog, gw_org):
    g = mock_catalog["groups"]
    return GatewayTenant("jobs team", gw_org, [g["chat"], g["broken"]], 100_000_000)


@pytest.fixture
def per_job(mock_catalog, gw_org):
    g = mock_catalog["groups"]
    return GatewayTenant(
        "flat team",
        gw_org,
        [g["chat"], g["broken"]],
        10_000_000,
        pricing_mode="per_job",
        job_price_micros=500_000,
        job_type_prices={"translate": 2_000_000},
    )


def test_a_job_groups_its_calls_by_header_or_metadata(live, tenant):
    # given
    job = open_job(live, tenant, metadata={"document": "d-42"})
    assert job["id"].startswith("job_") and job["status"] == "open"
    assert job["metadata"] == {"document": "d-42"} and job["type"] == "summarize"
    # when: one call names the job in a header, one in metadata, one is outside it
    by_header = post(live, tenant, "/v1/chat/completions", CHAT, {"x-job-id": job["id"]})
    by_body = post(
        live, tenant, "/v1/chat/completions", {**CHAT, "metadata": {"job_id": job["id"]}}
    )
    outside = post(live, tenant, "/v1/chat/completions", CHAT)
    assert by_header.status_code == by_body.status_code == outside.status_code == 200
    done = post(live, tenant, f"/v1/jobs/{job['id']}/complete", {"status": "completed"})
    # then: the job counts its two calls, live from the gateway
    assert done.status_code == 200, done.text
    view = done.json()
    assert view["status"] == "completed" and view["closed_at"] is not None
    assert view["calls"] == 2 and view["failed_calls"] == 0
    assert view["input_tokens"] == 2 * PROMPT_T and view["output_tokens"] == 2 * COMPLETION_T
    assert view["price"] == f"{2 * CALL_PRICE / 1e6:.6f}"
    assert view["cost"] == f"{2 * CALL_COST / 1e6:.6f}"
    assert get(live, tenant, f"/v1/jobs/{job['id']}").json() == view
    # and once settled, the same in Postgres and the admin API
    settlement.settle_usage()
    row = Job.objects.get(public_id=job["id"])
    assert row.status == "completed" and row.team == tenant.team
    assert row.calls.count() == 2
    assert UsageRecord.objects.filter(team=tenant.team, job__isnull=True).count() == 1
    admin = client_with(MASTER)
    detail = admin.get(f"/api/jobs/{job['id']}/").json()
    assert detail["calls"] == 2 and detail["price"] == view["price"]
    assert detail["cost"] == view["cost"] and detail["status"] == "completed"
    assert {c["request_id"] for c in detail["call_records"]} == {
        by_header.headers["x-request-id"],
        by_body.headers["x-request-id"],
    }
    listed = admin.get(f"/api/teams/{tenant.team.public_id}/jobs/?status=completed").json()
    assert [j["id"] for j in listed["results"]] == [job["id"]]
    calls = admin.get(f"/api/teams/{tenant.team.public_id}/calls/?job={job['id']}").json()
    assert len(calls["results"]) == 2


def test_a_closed_job_takes_no_more_calls_and_closes_once(live, tenant):
    # given
    job = open_job(live, tenant)
    assert post(live, tenant, f"/v1/jobs/{job['id']}/complete", {}).status_code == 200
    # when
    late = post(live, tenant, "/v1/chat/completions", CHAT, {"x-job-id": job["id"]})
    again = post(live, tenant, f"/v1/jobs/{job['id']}/complete", {"status": "cancelled"})
    # then
    assert late.status_code == 409 and late.json()["error"]["code"] == "job_closed"
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_closed"
    assert get(live, tenant, f"/v1/jobs/{job['id']}").json()["status"] == "completed"
    assert redis_account(tenant.team).get("resv", 0) == 0


def test_a_job_is_invisible_to_another_team(live, mock_catalog, gw_org, tenant):
    # given: team B holds a valid key; the job is team A's
    other = GatewayTenant("other team", gw_org, [mock_catalog["groups"]["chat"]], 100_000_000)
    job = open_job(live, tenant)
    # when: B reads it, calls in it, completes it
    read = get(live, other, f"/v1/jobs/{job['id']}")
    call = post(live, other, "/v1/chat/completions", CHAT, {"x-job-id": job["id"]})
    close = post(live, other, f"/v1/jobs/{job['id']}/complete", {})
    # then: exactly as if it did not exist, and A's job is untouched
    for response in (read, call, close):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "job_not_found"
    mine = get(live, tenant, f"/v1/jobs/{job['id']}").json()
    assert mine["status"] == "open" and mine["calls"] == 0


NO_JOB = "/v1/jobs/job_aaaaaaaaaaaaaaaaaaaa"


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/jobs", {}, 400, "invalid_job_type"),
        ("/v1/jobs", {"type": ""}, 400, "invalid_job_type"),
        ("/v1/jobs", {"type": "a b"}, 400, "invalid_job_type"),
        ("/v1/jobs", {"type": "x" * 101}, 400, "invalid_job_type"),
        ("/v1/jobs", {"type": "ok", "metadata": [1]}, 400, "invalid_metadata"),
        ("/v1/jobs", {"type": "ok", "metadata": {"a": "x" * 17_000}}, 400, "invalid_metadata"),
        ("/v1/jobs", [1], 400, "invalid_json"),
        (f"{NO_JOB}/complete", {}, 404, "job_not_found"),
        ("/v1/jobs/not-a-job/complete", {}, 404, "job_not_found"),
        (f"{NO_JOB}/complete", {"status": "done"}, 400, "invalid_job_status"),
        (f"{NO_JOB}/finish", {}, 404, "unknown_url"),
    ],
)
def test_bad_job_requests_are_clear_errors(live, tenant, path, body, status, code):
    response = post(live, tenant, path, body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.headers["x-request-id"].startswith("req_")


def test_wrong_methods_on_jobs_are_405(live, tenant):
    job = open_job(live, tenant)
    for method, path in (
        ("GET", "/v1/jobs"),
        ("DELETE", f"/v1/jobs/{job['id']}"),
        ("GET", f"/v1/jobs/{job['id']}/complete"),
    ):
        response = httpx.request(method, f"{live.url}{path}", headers=tenant.headers())
        assert response.status_code == 405, (method, path)
        assert response.json()["error"]["code"] == "method_not_allowed"


def test_a_call_naming_an_unknown_job_is_refused_before_the_upstream(live, tenant):
    response = post(
        live, tenant, "/v1/chat/completions", CHAT, {"x-job-id": "job_aaaaaaaaaaaaaaaaaaaa"}
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"
    settlement.settle_usage()
    assert not UsageRecord.objects.filter(team=tenant.team).exists()


def test_jobs_need_a_valid_key(live, tenant):
    response = httpx.post(f"{live.url}/v1/jobs", json={"type": "x"}, timeout=10)
    assert response.status_code == 401
    response = httpx.get(
        f"{live.url}/v1/jobs/job_aaaaaaaaaaaaaaaaaaaa",
        headers={"Authorization": "Bearer sk-nope"},
        timeout=10,
    )
    assert response.status_code == 401


# --- per_job pricing ------------------------------------------------------------------------


def test_per_job_pricing_charges_the_flat_price_once_at_completion(live, per_job):
    # given: an open job reserves its price
    job = open_job(live, per_job)
    assert job["job_price"] == "0.500000"
    assert redis_account(per_job.team)["resv"] == 500_000
    # when: two calls, then completion
    for _ in range(2):
        r = post(live, per_job, "/v1/chat/completions", CHAT, {"x-job-id": job["id"]})
        assert r.status_code == 200
    done = post(live, per_job, f"/v1/jobs/{job['id']}/complete", {}).json()
    settlement.settle_usage()
    # then: the calls are free, the job is charged once, its cost recorded beside its price
    assert done["price"] == "0.500000"
    assert not entries(per_job.team, "usage").exists()
    (entry,) = entries(per_job.team, "job")
    assert entry.amount_micros == -500_000 and entry.cost_micros == 2 * CALL_COST
    assert entry.idempotency_key == f"job:{job['id']}"
    per_job.team.account.refresh_from_db()
    assert per_job.team.account.balance_micros == 10_000_000 - 500_000
    account = redis_account(per_job.team)
    assert account["resv"] == 0 and account["pend"] == 0
    assert Job.objects.get(public_id=job["id"]).charged_micros == 500_000


def test_per_job_prices_by_job_type(live, per_job):
    job = open_job(live, per_job, job_type="translate")
    assert job["job_price"] == "2.000000"
    post(live, per_job, f"/v1/jobs/{job['id']}/complete", {})
    settlement.settle_usage()
    assert entries(per_job.team, "job").get().amount_micros == -2_000_000


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_failed_or_cancelled_jobs_are_free_and_release_their_reservation(live, per_job, status):
    # given
    job = open_job(live, per_job)
    post(live, per_job, "/v1/chat/completions", CHAT, {"x-job-id": job["id"]})
    # when
    done = post(live, per_job, f"/v1/jobs/{job['id']}/complete", {"status": status}).json()
    settlement.settle_usage()
    # then: nothing charged, but the provider cost is on the ledger (a zero entry)
    assert done["status"] == status and done["price"] == "0.000000"
    (entry,) = entries(per_job.team, "job")
    assert entry.amount_micros == 0 and entry.cost_micros == CALL_COST
    per_job.team.account.refresh_from_db()
    assert per_job.team.account.balance_micros == 10_000_000
    assert redis_account(per_job.team)["resv"] == 0


def test_a_completed_job_with_a_failed_call_is_free(live, per_job):
    # given: one call succeeds, one fails after all fallbacks
    job = open_job(live, per_job)
    assert post(live, per_job, "/v1/chat/completions", CHAT, {"x-job-id": job["id"]}).is_success
    broken = post(
        live, per_job, "/v1/chat/completions", {**CHAT, "model": "broken"}, {"x-job-id": job["id"]}
    )
    assert broken.status_code == 502
    # when
    done = post(live, per_job, f"/v1/jobs/{job['id']}/complete", {}).json()
    settlement.settle_usage()
    # then
    assert done["failed_calls"] == 1 and done["calls"] == 2 and done["price"] == "0.000000"
    assert entries(per_job.team, "job").get().amount_micros == 0
    assert Job.objects.get(public_id=job["id"]).charged_micros == 0


def test_per_job_teams_must_name_a_job(live, per_job):
    response = post(live, per_job, "/v1/chat/completions", CHAT)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "job_required"


def test_concurrent_job_openings_never_reserve_more_than_the_credits(live, mock_catalog, gw_org):
    # given: credits for three flat-priced jobs
    tenant = GatewayTenant(
        "three jobs",
        gw_org,
        [mock_catalog["groups"]["chat"]],
        1_500_000,
        pricing_mode="per_job",
        job_price_micros=500_000,
    )

    async def burst():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(f"{live.url}/v1/jobs", json={"type": "t"}, headers=tenant.headers())
                    for _ in range(40)
                )
            )

    # when: forty open at once, and every opened job completes
    responses = asyncio.run(burst())
    opened = [r.json()["id"] for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code != 201]
    for job_id in opened:
        post(live, tenant, f"/v1/jobs/{job_id}/complete", {})
    settlement.settle_usage()
    # then
    assert len(opened) == 3
    assert {r.status_code for r in refused} == {429}
    assert {r.json()["error"]["type"] for r in refused} == {"insufficient_quota"}
    charged = -entries(tenant.team, "job").aggregate(s=Sum("amount_micros"))["s"]
    assert charged == 1_500_000
    tenant.team.account.refresh_from_db()
    assert tenant.team.account.balance_micros == 0


def test_jobs_left_open_expire_and_bill_only_if_they_did_work(live, per_job):
    # given: one job with a call, one without
    busy, idle = open_job(live, per_job), open_job(live, per_job)
    post(live, per_job, "/v1/chat/completions", CHAT, {"x-job-id": busy["id"]})
    # when: the expiry task runs (twice: idempotent)
    assert settlement.expire_jobs(older_than_s=0) == 2
    assert settlement.expire_jobs(older_than_s=0) == 0
    settlement.settle_usage()
    # then
    assert Job.objects.get(public_id=busy["id"]).status == "expired"
    assert Job.objects.get(public_id=busy["id"]).charged_micros == 500_000
    assert Job.objects.get(public_id=idle["id"]).charged_micros == 0
    assert redis_account(per_job.team)["resv"] == 0
    assert sum(redis_client().zcard(open_jobs_key(s)) for s in SHARD_RANGE) == 0
    late = post(live, per_job, "/v1/chat/completions", CHAT, {"x-job-id": busy["id"]})
    assert late.status_code == 409


def test_a_retired_job_is_read_from_postgres(live, tenant):
    # given: a completed, settled job whose Redis copy has been retired
    job = open_job(live, tenant)
    post(live, tenant, "/v1/chat/completions", CHAT, {"x-job-id": job["id"]})
    live_view = post(live, tenant, f"/v1/jobs/{job['id']}/complete", {}).json()
    settlement.settle_usage()
    redis_client().delete(job_key(tenant.team.pk, job["id"]))
    # when
    response = get(live, tenant, f"/v1/jobs/{job['id']}")
    again = post(live, tenant, f"/v1/jobs/{job['id']}/complete", {})
    # then
    assert response.status_code == 200
    assert response.json() == live_view
    assert again.status_code == 409


def test_a_redelivered_job_record_posts_once(live, per_job):
    # given: a completed job, settled
    job = open_job(live, per_job)
    post(live, per_job, f"/v1/jobs/{job['id']}/complete", {})
    client = redis_client()
    messages = client.xrange(usage_stream(shard_of(per_job.team.pk)))
    settlement.settle_usage()
    # when: the same records are delivered again
    settlement.settle_messages(client, messages)
    # then
    assert entries(per_job.team, "job").count() == 1
    assert Job.objects.filter(public_id=job["id"]).count() == 1
    per_job.team.account.refresh_from_db()
    assert per_job.team.account.balance_micros == 10_000_000 - 500_000


# --- cost_markup and per_tokens -------------------------------------------------------------


def test_cost_markup_charges_provider_cost_times_the_rate(live, mock_catalog, gw_org):
    tenant = GatewayTenant(
        "markup",
        gw_org,
        [mock_catalog["groups"]["chat"]],
        100_000_000,
        pricing_mode="cost_markup",
        credits_per_usd_micros=3_000_000,  # 3 credits per USD of cost
    )
    assert post(live, tenant, "/v1/chat/completions", CHAT).status_code == 200
    settlement.settle_usage()
    entry = entries(tenant.team, "usage").get()
    assert entry.cost_micros == CALL_COST
    assert entry.amount_micros == -3 * CALL_COST == -entry.calls.get().price_micros


def test_per_tokens_charges_per_unit_of_tokens(live, mock_catalog, gw_org):
    tenant = GatewayTenant(
        "by tokens",
        gw_org,
        [mock_catalog["groups"]["chat"]],
        100_000_000,
        pricing_mode="per_tokens",
        tokens_per_unit=1000,
        price_per_unit_micros=10_000,  # 0.01 credit per 1000 tokens
    )
    assert post(live, tenant, "/v1/chat/completions", CHAT).status_code == 200
    settlement.settle_usage()
    entry = entries(tenant.team, "usage").get()
    assert entry.amount_micros == -((PROMPT_T + COMPLETION_T) * 10_000 // 1000)
    assert entry.amount_micros == -entry.calls.get().price_micros
    assert entry.cost_micros == CALL_COST


def test_pricing_mode_settings_are_validated(db):
    admin = client_with(MASTER)
    org = admin.post("/api/organizations/", {"name": "Pricing Org"}, format="json").json()
    cases = [
        ({"pricing_mode": "cost_markup"}, "credits_per_usd"),
        ({"pricing_mode": "per_tokens", "tokens_per_unit": 1000}, "price_per_unit"),
        ({"pricing_mode": "per_job"}, "job_price"),
        ({"pricing_mode": "per_job", "job_price": "1", "job_type_prices": {"a b": "1"}}, None),
        ({"pricing_mode": "per_job", "job_price": "1", "job_type_prices": {"a": 1.5}}, None),
        ({"pricing_mode": "gold"}, "pricing_mode"),
    ]
    for i, (fields, field) in enumerate(cases):
        response = admin.post(
            "/api/teams/", {"organization": org["id"], "name": f"t{i}", **fields}, format="json"
        )
        assert response.status_code == 400, (fields, response.content)
        if field:
            assert field in response.json()["error"]["fields"], response.json()
    ok = admin.post(
        "/api/teams/",
        {
            "organization": org["id"],
            "name": "flat",
            "pricing_mode": "per_job",
            "job_price": "0.5",
            "job_type_prices": {"translate": "2"},
        },
        format="json",
    )
    assert ok.status_code == 201, ok.content
    assert ok.json()["job_price"] == "0.500000"
    assert ok.json()["job_type_prices"] == {"translate": "2.000000"}
    # switching away keeps the parameters; switching back to a mode without them is refused
    team = ok.json()["id"]
    assert (
        admin.patch(
            f"/api/teams/{team}/", {"pricing_mode": "cost_markup"}, format="json"
        ).status_code
        == 400
    )
