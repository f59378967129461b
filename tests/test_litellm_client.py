"""The LiteLLM admin client against the contract fake: typed results, retryable vs terminal."""

import logging
from datetime import UTC, datetime, timedelta

import pytest

from core.secrets import hash_secret
from litellm_sync.client import (
    LiteLLMClient,
    LiteLLMNotConfigured,
    LiteLLMRejected,
    LiteLLMUnavailable,
    enabled,
)

SECRET = "sk-customer-secret-abcdefghijklmnop"


def test_the_integration_is_off_unless_url_and_master_key_are_both_set(settings):
    settings.LITELLM_BASE_URL = "http://127.0.0.1:4000"
    settings.LITELLM_MASTER_KEY = ""
    assert not enabled()
    with pytest.raises(LiteLLMNotConfigured):
        LiteLLMClient()


def test_teams_are_created_read_merged_and_deleted(litellm):
    with LiteLLMClient() as client:
        assert client.team_info("team_x") is None
        client.team_new({"team_id": "team_x", "team_alias": "X", "models": ["fake-gpt"]})
        client.team_update({"team_id": "team_x", "rpm_limit": 5, "max_budget": 2.5})
        info = client.team_info("team_x")
        client.team_delete(["team_x"])
        client.team_delete(["team_x"])  # already gone: not an error
        gone = client.team_info("team_x")
    assert (info.alias, info.models, info.rpm_limit, info.max_budget) == ("X", ["fake-gpt"], 5, 2.5)
    assert gone is None


def test_a_duplicate_team_id_is_a_terminal_already_exists(litellm):
    with LiteLLMClient() as client:
        client.team_new({"team_id": "team_x"})
        with pytest.raises(LiteLLMRejected) as caught:
            client.team_new({"team_id": "team_x"})
    assert caught.value.already_exists
    assert caught.value.status == 400


def test_a_key_is_created_with_our_secret_and_found_by_its_hash(litellm):
    with LiteLLMClient() as client:
        client.key_generate({"key": SECRET, "key_alias": "key_1.abc", "team_id": "t"})
        info = client.key_info(hash_secret(SECRET))
        missing = client.key_info(hash_secret(SECRET + "x"))
    assert (info.key_hash, info.alias, info.team_id, info.status) == (
        hash_secret(SECRET),
        "key_1.abc",
        "t",
        "active",
    )
    assert missing is None
    # the plaintext never travelled as a query parameter
    assert ("GET", "/key/info") in litellm.calls


def test_a_duplicate_key_alias_is_a_terminal_already_exists(litellm):
    with LiteLLMClient() as client:
        client.key_generate({"key": SECRET, "key_alias": "dup"})
        with pytest.raises(LiteLLMRejected) as caught:
            client.key_generate({"key": SECRET + "2", "key_alias": "dup"})
    assert caught.value.already_exists
    assert (caught.value.type, caught.value.param) == ("bad_request_error", "key_alias")


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_and_throttling_are_retryable(litellm, status):
    litellm.fail_next(status)
    with LiteLLMClient() as client, pytest.raises(LiteLLMUnavailable) as caught:
        client.team_new({"team_id": "team_x"})
    assert caught.value.status == status
    assert "team_x" not in litellm.teams


def test_a_timeout_is_retryable(litellm):
    litellm.fail_next("timeout")
    with LiteLLMClient() as client, pytest.raises(LiteLLMUnavailable) as caught:
        client.team_info("team_x")
    assert "timed out" in caught.value.message


def test_litellm_down_is_retryable(litellm):
    litellm.stop()
    with LiteLLMClient() as client, pytest.raises(LiteLLMUnavailable):
        client.team_info("team_x")


def test_client_errors_are_terminal_in_either_error_shape(litellm):
    with LiteLLMClient() as client:
        # {"error": {...}}
        with pytest.raises(LiteLLMRejected) as proxy_shape:
            client.key_generate({"key": "sk-short"})
        # {"detail": {"error": ...}}
        with pytest.raises(LiteLLMRejected) as detail_shape:
            client.team_update({"team_id": "nope", "rpm_limit": 1})
    assert proxy_shape.value.status == 400 and proxy_shape.value.param == "key"
    assert "must start with 'sk-'" in proxy_shape.value.message
    assert detail_shape.value.status == 404 and detail_shape.value.not_found
    assert "Team not found" in detail_shape.value.message


def test_the_master_key_and_secrets_never_reach_errors_or_logs(litellm, caplog, settings):
    caplog.set_level(logging.DEBUG)
    litellm.fail_next(500)
    errors = []
    with LiteLLMClient() as client:
        for call in (
            lambda: client.key_generate({"key": SECRET, "key_alias": "a"}),  # 500
            lambda: client.key_generate({"key": SECRET, "key_alias": "a"}),  # created
            lambda: client.key_generate({"key": SECRET + "x", "key_alias": "a"}),  # taken
        ):
            try:
                call()
            except Exception as exc:
                errors.append(str(exc))
    settings.LITELLM_MASTER_KEY = "sk-wrong-master-key-0000000000"
    with LiteLLMClient() as client, pytest.raises(LiteLLMRejected) as denied:
        client.team_info("t")
    errors.append(str(denied.value))
    text = caplog.text + " ".join(errors)
    assert len(errors) == 3
    for secret in (litellm.master_key, SECRET, "sk-wrong-master-key"):
        assert secret not in text


def test_spend_logs_page_oldest_first_within_inclusive_bounds(litellm):
    t0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    for i in range(5):
        litellm.add_spend_row(startTime=(t0 + timedelta(seconds=i)).isoformat(), spend=0.1 * i)
    litellm.add_spend_row(startTime=(t0 + timedelta(hours=1)).isoformat())
    with LiteLLMClient() as client:
        assert client.spend_logs(start=t0, end=t0 + timedelta(seconds=4)).rows == []  # late rows
        litellm.flush_spend()
        first = client.spend_logs(start=t0, end=t0 + timedelta(seconds=4), page_size=2)
        last = client.spend_logs(start=t0, end=t0 + timedelta(seconds=4), page=3, page_size=2)
    assert (first.total, first.total_pages, first.capped) == (5, 3, False)
    assert [r.started_at for r in first.rows] == [t0, t0 + timedelta(seconds=1)]
    assert [r.started_at for r in last.rows] == [t0 + timedelta(seconds=4)]


def test_model_info_is_typed(litellm):
    with LiteLLMClient() as client:
        [deployment] = client.model_info()
    assert deployment.model_name == "fake-gpt"
    assert deployment.provider_model == "openai/gpt-4o-mini"
    assert deployment.input_cost_per_token == 0.00000015
