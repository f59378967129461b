"""LiteLLM as the gateway's upstream: the real proxy (1.106.2, no database) for chat, streaming
and error bodies, and the contract fake for the caller's synced key and spend-log call ids.

The real proxy runs with mock deployments (the project's mock upstream behind it, and LiteLLM's
own mock errors) and a `custom_auth` hook standing in for the key table that LiteLLM keeps in a
database this machine cannot run: the hook accepts the keys a test lists, with their team,
rpm limit or an exhausted budget, and answers unknown keys as LiteLLM does. Everything else
(routing, limiter, budget and error rendering, SSE) is LiteLLM's own code.
"""

import hashlib
import json
import os
import secrets
import sys
from pathlib import Path

import httpx
import pytest

from bench.install import LITELLM_VERSION, REPO, ensure_litellm
from bench.procs import Procs, StartError, free_port, wait_http
from billing.models import UsageRecord
from modelgroups import services as catalog
from tests.helpers.tenants import GatewayTenant

AUTH_HOOK = """
import hashlib, json, os

import litellm
from litellm.proxy._types import LitellmUserRoles, ProxyErrorTypes, ProxyException, UserAPIKeyAuth

MASTER = {master!r}
KEYS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keys.json")


async def user_api_key_auth(request, api_key):
    if api_key == MASTER:
        return UserAPIKeyAuth(api_key=api_key, user_role=LitellmUserRoles.PROXY_ADMIN)
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    with open(KEYS) as fh:
        entry = json.load(fh).get(digest)
    if entry is None:
        raise ProxyException(
            message="Authentication Error, Invalid proxy server token passed. key=" + digest
            + ", not found in db. Create key via `/key/generate` call.",
            type=ProxyErrorTypes.token_not_found_in_db,
            param="key",
            code=401,
        )
    if entry.get("budget_exceeded"):
        raise litellm.BudgetExceededError(
            current_cost=1.0,
            max_budget=1.0,
            message="Budget has been exceeded! Team=" + entry["team_id"]
            + " Current cost: 1.0, Max budget: 1.0",
        )
    return UserAPIKeyAuth(api_key=api_key, team_id=entry["team_id"], rpm_limit=entry.get("rpm"))
"""


def litellm_config(mock_base: str, master: str) -> str:
    def deployment(name, params):
        return {"model_name": name, "litellm_params": params}

    upstream = {"api_base": f"{mock_base}/v1", "api_key": "sk-mock-provider-key"}
    config = {
        "model_list": [
            {
                **deployment("lite-chat", {"model": "openai/mock-a", **upstream}),
                "model_info": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
            },
            deployment("lite-429", {"model": "openai/mock-fail-429", **upstream}),
            deployment("lite-500", {"model": "openai/mock-fail-500", **upstream}),
            deployment(
                "lite-ctx",
                {"model": "openai/x", "mock_response": "litellm.ContextWindowExceededError"},
            ),
        ],
        "general_settings": {
            "master_key": master,
            "custom_auth": "tollgate_keys.user_api_key_auth",
        },
        "litellm_settings": {"telemetry": False, "num_retries": 0},
        "router_settings": {"num_retries": 0},
    }
    return json.dumps(config)  # JSON is YAML


class RealLiteLLM:
    def __init__(self, url: str, master: str, workdir: Path):
        self.url, self.master, self.workdir = url, master, workdir
        self.allow()

    def allow(self, **keys) -> None:
        """The keys LiteLLM knows: {secret: {"team_id", "rpm"?, "budget_exceeded"?}}."""
        table = {hashlib.sha256(s.encode()).hexdigest(): entry for s, entry in keys.items()}
        (self.workdir / "keys.json").write_text(json.dumps(table))


@pytest.fixture(scope="module")
def real_litellm(tmp_path_factory):
    """LiteLLM's proxy from PyPI (installed once into .bench/litellm-venv, as the benchmark
    does), no database, in front of the project's mock upstream."""
    install = ensure_litellm(allow_install=True)
    if install.bin is None:
        pytest.skip(f"LiteLLM {LITELLM_VERSION} could not be installed: {install.reason}")
    workdir = tmp_path_factory.mktemp("litellm")
    master = "sk-test-master-" + secrets.token_hex(12)
    with Procs(workdir) as procs:
        mock_port = free_port()
        mock = procs.start(
            "mock-upstream",
            [sys.executable, "-m", "devtools.mock_upstream", "--port", str(mock_port)],
            cwd=REPO,
        )
        port = free_port()
        (workdir / "tollgate_keys.py").write_text(AUTH_HOOK.format(master=master))
        (workdir / "config.yaml").write_text(
            litellm_config(f"http://127.0.0.1:{mock_port}", master)
        )
        env = {
            "PATH": f"{install.bin.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "TMPDIR": str(workdir),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no internet for the price map
            "LITELLM_MODE": "PRODUCTION",  # never load our .env (see bench/systems.py)
            "LITELLM_LOG": "ERROR",
        }
        argv = [str(install.bin), "--config", "config.yaml", "--host", "127.0.0.1"]
        child = procs.start(
            "litellm", [*argv, "--port", str(port), "--num_workers", "1"], env=env, cwd=workdir
        )
        try:
            wait_http(mock, f"http://127.0.0.1:{mock_port}/v1/models", timeout=30)
            wait_http(child, f"http://127.0.0.1:{port}/health/liveliness", timeout=240)
        except StartError as exc:
            pytest.fail(str(exc))
        yield RealLiteLLM(f"http://127.0.0.1:{port}", master, workdir)


@pytest.fixture
def via_litellm(real_litellm, live):
    """Two LiteLLM upstreams (the master key; the caller's key) and groups over them."""
    real_litellm.allow()
    master = catalog.upstream_create(
        actor="test",
        name="litellm-master",
        kind="litellm",
        base_url=f"{real_litellm.url}/v1",
        api_key=real_litellm.master,
    )
    caller = catalog.upstream_create(
        actor="test",
        name="litellm-caller",
        kind="litellm",
        key_mode="caller",
        base_url=f"{real_litellm.url}/v1",
    )
    direct = catalog.upstream_create(
        actor="test", name="mock", kind="mock", base_url=live.mock_url, api_key="sk-p-0123456789"
    )
    price = {"input_price_micros": 1_000_000, "output_price_micros": 2_000_000}

    def model(name, upstream, upstream_model):
        return catalog.model_create(
            actor="test", name=name, upstream=upstream, upstream_model=upstream_model, **price
        )

    def group(name, *models):
        return catalog.model_group_create(
            actor="test", name=name, members=[{"model": m} for m in models]
        )

    chat = model("lite-chat", master, "lite-chat")
    own = model("lite-own", caller, "lite-chat")
    return {
        "chat": group("chat", chat),
        "own": group("own", own),
        "own-or-direct": group("own-or-direct", own, model("direct", direct, "mock-b")),
        "flaky": group("flaky", model("lite-429", master, "lite-429"), chat),
        "broken": group("broken", model("lite-500", master, "lite-500")),
        "ctx": group("ctx", model("lite-ctx", master, "lite-ctx")),
    }


@pytest.fixture
def tenant(via_litellm, gw_org):
    return GatewayTenant("lite team", gw_org, list(via_litellm.values()), 100_000_000)


def chat(live, tenant, model, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "Hello there"}], **extra}
    return httpx.post(
        f"{live.url}/v1/chat/completions", json=body, headers=tenant.headers(), timeout=30
    )


def test_chat_through_litellm_with_the_master_key(live, tenant):
    # when
    response = chat(live, tenant, "chat")
    # then: the mock upstream's reply, through LiteLLM, under our model name
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"].startswith("Mock reply to: Hello there")
    assert body["model"] == "lite-chat"
    assert body["usage"]["prompt_tokens"] > 0
    assert response.headers["x-tollgate-model"] == "lite-chat"


def test_streaming_through_litellm(live, tenant):
    # when
    with httpx.stream(
        "POST",
        f"{live.url}/v1/chat/completions",
        json={
            "model": "chat",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Hello there"}],
        },
        headers=tenant.headers(),
        timeout=30,
    ) as response:
        frames = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    # then
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
    assert text.startswith("Mock reply to: Hello there")
    assert {c["model"] for c in chunks} == {"lite-chat"}
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_the_callers_own_key_is_forwarded_to_litellm(live, tenant, real_litellm):
    # given: LiteLLM knows the team's key (the sync put it there)
    real_litellm.allow(**{tenant.secret: {"team_id": tenant.team.public_id}})
    # when
    response = chat(live, tenant, "own")
    # then
    assert response.status_code == 200, response.text
    assert response.headers["x-tollgate-model"] == "lite-own"


def test_a_key_litellm_does_not_know_yet_falls_back_and_is_named_in_the_error(live, tenant):
    # when: LiteLLM has no copy of the key (its sync is pending)
    served = chat(live, tenant, "own-or-direct")
    refused = chat(live, tenant, "own")
    # then: the next model serves; with none left, the reason is in a 502, not a 401
    assert served.status_code == 200 and served.headers["x-tollgate-model"] == "direct"
    assert refused.status_code == 502
    error = refused.json()["error"]
    assert error["type"] == "upstream_error"
    assert (
        "LiteLLM refused this key" in error["message"]
        and "token_not_found_in_db" in (error["message"])
    )
    assert tenant.secret not in refused.text


def test_litellm_budget_exceeded_is_the_gateways_budget_exceeded(live, tenant, real_litellm):
    # given: LiteLLM says the team's budget is spent (it answers 422 since 1.104)
    real_litellm.allow(**{tenant.secret: {"team_id": "t", "budget_exceeded": True}})
    # when
    response = chat(live, tenant, "own-or-direct")
    # then: the gateway's own error, no fallback, nothing charged
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "budget_exceeded"
    assert response.json()["error"]["code"] == "budget_exceeded"
    assert "direct" not in response.headers.get("x-tollgate-model", "")


def test_litellm_rate_limits_on_the_callers_key_are_the_gateways_429(live, tenant, real_litellm):
    # given: one request per minute for this key in LiteLLM
    real_litellm.allow(**{tenant.secret: {"team_id": "t", "rpm": 1}})
    assert chat(live, tenant, "own").status_code == 200
    # when
    response = chat(live, tenant, "own-or-direct")
    # then
    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert int(response.headers["retry-after"]) > 0


def test_provider_errors_behind_litellm_fall_back_like_any_upstream(live, tenant):
    # when: the provider behind LiteLLM answers 429, then 500
    served = chat(live, tenant, "flaky")
    broken = chat(live, tenant, "broken")
    # then
    assert served.status_code == 200 and served.headers["x-tollgate-model"] == "lite-chat"
    assert broken.status_code == 502
    assert "HTTP 500" in broken.json()["error"]["message"]


def test_a_callers_mistake_reported_by_litellm_is_passed_on_uncharged(live, tenant):
    # when
    response = chat(live, tenant, "ctx")
    # then
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "ContextWindowExceededError" in response.json()["error"]["message"]


# --- the caller's synced key, against the contract fake --------------------------------


@pytest.fixture
def via_fake(litellm, live):
    up = catalog.upstream_create(
        actor="test", name="fake-litellm", kind="litellm", key_mode="caller", base_url=litellm.url
    )
    model = catalog.model_create(
        actor="test",
        name="fake-gpt",
        upstream=up,
        upstream_model="fake-gpt",
        input_price_micros=1_000_000,
        output_price_micros=2_000_000,
    )
    return catalog.model_group_create(actor="test", name="fake", members=[{"model": model}])


def test_a_synced_key_calls_litellm_as_itself_and_its_spend_log_names_our_request(
    litellm, via_fake, gw_org, live
):
    # given: the team and key are synced into LiteLLM
    tenant = GatewayTenant("synced", gw_org, [via_fake], 100_000_000)
    assert litellm.key(tenant.secret)["status"] == "active"
    # when
    response = chat(live, tenant, "fake")
    # then: LiteLLM counted it against the team's key, under our request id
    assert response.status_code == 200, response.text
    litellm.flush_spend()
    [row] = litellm.spend_rows
    assert row["api_key"] == tenant.key.key_hash
    assert row["litellm_call_id"] == response.headers["x-request-id"]
    assert row["team_id"] == tenant.team.public_id


@pytest.mark.parametrize("status", [400, 429, 422])
def test_budget_exceeded_is_recognised_whatever_status_litellm_uses(
    litellm, via_fake, gw_org, live, status
):
    # given: LiteLLM's copy of the team has no budget left (400 until 2024, 429 until 1.103)
    tenant = GatewayTenant("broke", gw_org, [via_fake], 100_000_000)
    litellm.budget_status = status
    litellm.teams[tenant.team.public_id]["max_budget"] = 0.0
    # when
    response = chat(live, tenant, "fake")
    # then
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "budget_exceeded"
    assert not UsageRecord.objects.filter(team=tenant.team, price_micros__gt=0).exists()
