"""LiteLLM's spend log pulled and reconciled (contract fake): stored once whatever the overlaps,
late rows and page shifts; direct calls charged once; our gateway calls matched; drift reported;
and LiteLLM's model list imported without overwriting an admin's edits."""

from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from billing.models import LedgerEntry, UsageRecord
from billing.services import credits_grant
from billing.settlement import settle_usage
from litellm_sync import spend
from litellm_sync.client import LiteLLMUnavailable
from litellm_sync.imports import models_import
from litellm_sync.models import ModelImport, SpendCursor, SpendLog
from litellm_sync.selectors import drift_report
from modelgroups import services as catalog
from modelgroups.models import Model
from orgs.services import organization_create
from teams.services import key_create, team_create
from tests.helpers.tenants import GatewayTenant


def ago(minutes: float) -> str:
    return (timezone.now() - timedelta(minutes=minutes)).isoformat()


@pytest.fixture
def funded(litellm, db, django_capture_on_commit_callbacks):
    """A synced team with 100 credits and a key."""
    org = organization_create(actor="t", name="Acme")[0]
    with django_capture_on_commit_callbacks(execute=True):
        team = team_create(actor="t", organization=org, name="T")
        credits_grant(
            team=team, amount_micros=100_000_000, reason="t", actor="t", idempotency_key="g"
        )
        key, _ = key_create(actor="t", team=team, name="k")
    return team, key


def direct_row(litellm, team, key, **row):
    return litellm.add_spend_row(
        api_key=key.key_hash, team_id=team.public_id, spend=0.02, prompt_tokens=10,
        completion_tokens=20, **row,
    )  # fmt: skip


def usage_debits(team) -> list[int]:
    return list(
        LedgerEntry.objects.filter(account__team=team, kind="usage").values_list(
            "amount_micros", flat=True
        )
    )


def test_a_direct_call_is_charged_once_however_often_it_is_read(litellm, funded):
    # given: a call made to LiteLLM directly with the team's key, 0.02 USD
    team, key = funded
    row = direct_row(litellm, team, key, startTime=ago(5))
    litellm.flush_spend()
    # when: pulled, then pulled again (the overlap re-reads it), then charged again
    first = spend.spend_pull()
    second = spend.spend_pull()
    spend.direct_calls_charge()
    # then: 0.02 USD at 1.25 credits per USD, once
    assert (first["new"], first["charged"], second["new"], second["charged"]) == (1, 1, 0, 0)
    assert usage_debits(team) == [-25_000]
    log = SpendLog.objects.get(request_id=row["request_id"])
    assert (log.team, log.key, log.charged_micros, log.via_gateway) == (team, key, 25_000, False)
    record = UsageRecord.objects.get(team=team)
    assert (record.key, record.cost_micros, record.price_micros) == (key, 20_000, 25_000)
    assert (record.input_tokens, record.output_tokens) == (10, 20)


def test_rows_written_late_are_picked_up_by_the_overlap(litellm, funded, settings):
    # given: a first pull, then LiteLLM's batch writer adds a row that started before it
    team, key = funded
    settings.LITELLM_SPEND_OVERLAP_SECONDS = 900
    direct_row(litellm, team, key, startTime=ago(5))
    litellm.flush_spend()
    spend.spend_pull()
    late = direct_row(litellm, team, key, startTime=ago(4))
    litellm.flush_spend()
    # when
    result = spend.spend_pull()
    # then
    assert result["new"] == 1
    assert SpendLog.objects.filter(request_id=late["request_id"]).exists()
    assert len(usage_debits(team)) == 2


def test_pages_that_shift_between_requests_lose_no_row(litellm, funded, monkeypatch):
    # given: 240 rows, four per second, in random order within a second on every request
    team, key = funded
    monkeypatch.setattr(spend, "PAGE_SIZE", 50)
    litellm.shuffle_ties = True
    base = timezone.now() - timedelta(minutes=10)
    for i in range(240):
        direct_row(litellm, team, key, startTime=(base + timedelta(seconds=i // 4)).isoformat())
    litellm.flush_spend()
    # when
    spend.spend_pull()
    # then
    assert SpendLog.objects.count() == 240


def test_litellm_down_leaves_the_cursor_where_it_was(litellm, funded):
    # given
    spend.spend_pull()
    before = SpendCursor.objects.get().pulled_until
    litellm.stop()
    # when
    with pytest.raises(LiteLLMUnavailable):
        spend.spend_pull()
    # then
    assert SpendCursor.objects.get().pulled_until == before


def test_a_row_claiming_one_of_our_request_ids_is_charged_unless_we_have_that_call(litellm, funded):
    # given: a direct call sent with x-litellm-call-id: req_… to look like a gateway call
    team, key = funded
    direct_row(litellm, team, key, startTime=ago(5), litellm_call_id="req_" + "0" * 24)
    litellm.flush_spend()
    # when: pulled now, and an hour later
    spend.spend_pull()
    waiting = usage_debits(team)
    spend.direct_calls_charge(now=timezone.now() + timedelta(hours=2))
    # then: given time for our own record to settle, then charged
    assert waiting == []
    assert usage_debits(team) == [-25_000]


@pytest.mark.django_db(transaction=True)
def test_gateway_calls_through_litellm_are_matched_not_charged_again(litellm, live, settings):
    # given: a team calling a LiteLLM upstream through our gateway with its own key
    up = catalog.upstream_create(
        actor="t", name="lite", kind="litellm", key_mode="caller", base_url=litellm.url
    )
    model = catalog.model_create(
        actor="t", name="fake-gpt", upstream=up, upstream_model="fake-gpt",
        input_cost_micros=150_000, output_cost_micros=600_000,
    )  # fmt: skip
    group = catalog.model_group_create(actor="t", name="g", members=[{"model": model}])
    org = organization_create(actor="t", name="Gw")[0]
    tenant = GatewayTenant("gw", org, [group], 100_000_000)
    response = httpx.post(
        f"{live.url}/v1/chat/completions",
        json={"model": "g", "messages": [{"role": "user", "content": "hi"}]},
        headers=tenant.headers(),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    settle_usage()
    charged = usage_debits(tenant.team)
    litellm.flush_spend()
    # when: a later pull reads LiteLLM's row of that call
    spend.spend_pull(now=timezone.now() + timedelta(minutes=2))
    # then: matched to our record, not charged a second time
    [log] = SpendLog.objects.all()
    assert log.call_id == response.headers["x-request-id"]
    assert log.via_gateway and log.charged_micros is None
    assert usage_debits(tenant.team) == charged
    # and the drift report agrees (the same 10/20 tokens, costed alike)
    window = {"start": timezone.now() - timedelta(hours=1), "end": timezone.now()}
    report = drift_report(**window)
    assert (report["gateway_calls"], report["matched"]) == (1, 1)
    assert report["missing_in_litellm"]["count"] == report["missing_in_tollgate"]["count"] == 0
    # and a cost difference beyond the tolerance is reported
    settings.LITELLM_DRIFT_TOLERANCE_MICROS = 0
    SpendLog.objects.update(spend_micros=1_000)
    [drift] = drift_report(**window)["cost_drift"]
    assert (drift["team"], drift["model"], drift["calls"]) == (tenant.team.public_id, "fake-gpt", 1)
    assert drift["litellm_cost_micros"] == 1_000


def test_drift_lists_our_calls_litellm_never_logged(litellm, funded, api):
    # given: a gateway call to a LiteLLM model that LiteLLM has no row of
    team, key = funded
    up = catalog.upstream_create(actor="t", name="lite", kind="litellm", base_url=litellm.url)
    catalog.model_create(actor="t", name="lite-m", upstream=up, upstream_model="fake-gpt")
    UsageRecord.objects.create(
        request_id="req_lost", organization_id=team.organization_id, team=team, key=key,
        model="lite-m", cost_micros=5, created_at=timezone.now() - timedelta(hours=1),
    )  # fmt: skip
    # when
    response = api.get("/api/litellm/drift/")
    # then
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["missing_in_litellm"] == {"count": 1, "request_ids": ["req_lost"]}
    assert body["sync"]["keys"]["synced"] == 1


# --- model import -------------------------------------------------------------------------


@pytest.fixture
def lite_upstream(litellm, db):
    litellm.add_model("fake-big", "openai/gpt-4o", 0.0000025, 0.00001, max_input_tokens=128000)
    return catalog.upstream_create(
        actor="t", name="lite", kind="litellm", base_url=f"{litellm.url}/v1"
    )


def test_import_creates_models_with_litellm_costs(litellm, lite_upstream, api):
    # when
    response = api.post(f"/api/upstreams/{lite_upstream.public_id}/import-models/", {}, "json")
    # then
    assert response.status_code == 200, response.json()
    assert response.json()["created"] == ["fake-big", "fake-gpt"]
    big = Model.objects.get(name="fake-big")
    assert (big.upstream, big.upstream_model, big.context_window) == (
        lite_upstream,
        "fake-big",
        128000,
    )
    assert (big.input_cost_micros, big.output_cost_micros) == (2_500_000, 10_000_000)
    assert big.input_price_micros == 3_125_000  # the markup, as for any new model
    assert [c for c in litellm.calls if c[1] == "/model/info"] == [("GET", "/model/info")]


def test_reimport_updates_untouched_models_and_asks_before_overwriting_edits(
    litellm, lite_upstream
):
    # given: imported, then an admin edits one model's price here, and LiteLLM's costs change
    models_import(actor="t", upstream=lite_upstream)
    catalog.model_update(
        actor="t", model=Model.objects.get(name="fake-big"), data={"input_price_micros": 9}
    )
    for deployment in litellm.deployments:
        deployment["model_info"]["input_cost_per_token"] *= 2
    # when
    result = models_import(actor="t", upstream=lite_upstream)
    # then: the untouched model follows LiteLLM, the edited one is reported, not changed
    assert result.updated == ["fake-gpt"]
    assert Model.objects.get(name="fake-gpt").input_cost_micros == 300_000
    assert Model.objects.get(name="fake-gpt").input_price_micros == 375_000  # followed the cost
    [skipped] = result.skipped
    assert skipped["name"] == "fake-big" and skipped["reason"].startswith("edited here")
    assert skipped["changes"] == {"input_cost_micros": [2_500_000, 5_000_000]}
    assert Model.objects.get(name="fake-big").input_cost_micros == 2_500_000
    # when: the admin asks for it, by name
    result = models_import(actor="t", upstream=lite_upstream, overwrite=["fake-big"])
    # then
    assert result.updated == ["fake-big"]
    big = Model.objects.get(name="fake-big")
    assert (big.input_cost_micros, big.input_price_micros) == (5_000_000, 9)  # price kept
    assert ModelImport.objects.get(model=big).imported["input_cost_micros"] == 5_000_000


def test_a_dry_run_changes_nothing_and_models_gone_from_litellm_are_reported(
    litellm, lite_upstream
):
    models_import(actor="t", upstream=lite_upstream)
    litellm.deployments.pop()
    result = models_import(actor="t", upstream=lite_upstream, dry_run=True)
    assert result.missing_in_litellm == ["fake-big"]
    fresh = models_import(actor="t", upstream=catalog.upstream_create(
        actor="t", name="lite2", kind="litellm", base_url=litellm.url
    ), dry_run=True)  # fmt: skip
    assert fresh.created == [] and [s["name"] for s in fresh.skipped] == ["fake-gpt"]
    assert Model.objects.count() == 2


def test_only_a_litellm_upstream_can_import(api, catalog_objects):
    before = Model.objects.count()
    response = api.post(
        f"/api/upstreams/{catalog_objects['upstream'].public_id}/import-models/", {}, "json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "validation_error"
    assert Model.objects.count() == before
