import httpx


def test_chat_completion_is_served_and_metered(live, gw_team):
    # when
    r = httpx.post(
        f"{live.url}/v1/chat/completions",
        headers=gw_team.headers(),
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
    )
    # then
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "mock-a"
    assert body["usage"]["total_tokens"] > 0
    assert r.headers["x-request-id"].startswith("req_")


def test_legacy_completions_are_routed_and_metered(live, mock_catalog, gw_org):
    from billing import settlement
    from billing.models import UsageRecord
    from modelgroups import services as catalog
    from tests.helpers.tenants import GatewayTenant

    model = catalog.model_create(
        actor="test",
        name="mock-instruct",
        upstream=mock_catalog["upstream"],
        upstream_model="mock-instruct",
        mode="completion",
        input_price_micros=1_000_000,
    )
    group = catalog.model_group_create(actor="test", name="instruct", members=[{"model": model}])
    tenant = GatewayTenant("legacy", gw_org, [group], 1_000_000)
    # when
    r = httpx.post(
        f"{live.url}/v1/completions",
        headers=tenant.headers(),
        json={"model": "instruct", "prompt": "Say this is a test", "max_tokens": 8},
    )
    streamed = httpx.post(
        f"{live.url}/v1/completions",
        headers=tenant.headers(),
        json={"model": "instruct", "prompt": "Again", "stream": True},
    )
    settlement.settle_usage()
    # then
    assert r.status_code == 200 and r.json()["object"] == "text_completion"
    assert r.json()["model"] == "mock-instruct"
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    records = UsageRecord.objects.filter(team=tenant.team)
    assert records.count() == 2
    assert all(rec.input_tokens > 0 and rec.price_micros > 0 for rec in records)


def test_embeddings_are_charged_for_input_tokens(live, gw_team):
    from billing import settlement
    from billing.models import UsageRecord

    r = httpx.post(
        f"{live.url}/v1/embeddings",
        headers=gw_team.headers(),
        json={"model": "embed", "input": ["one two three", "four"]},
    )
    settlement.settle_usage()
    assert r.status_code == 200, r.text
    record = UsageRecord.objects.get(request_id=r.headers["x-request-id"])
    assert record.input_tokens == r.json()["usage"]["prompt_tokens"] > 0
    assert record.output_tokens == 0
    assert record.price_micros == record.input_tokens  # 1 credit per 1M tokens = 1 micro/token


def test_a_chat_call_to_an_embedding_group_is_a_clear_400(live, gw_team):
    r = httpx.post(
        f"{live.url}/v1/chat/completions",
        headers=gw_team.headers(),
        json={"model": "embed", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "model_mode_mismatch"


def test_an_upstream_auth_failure_falls_back_and_never_blames_the_customer_key(
    live, mock_catalog, gw_org
):
    from modelgroups import services as catalog
    from tests.helpers.tenants import GatewayTenant

    # given: a model whose provider rejects our provider key (401)
    misconfigured = catalog.model_create(
        actor="test",
        name="mock-badkey",
        upstream=mock_catalog["upstream"],
        upstream_model="mock-fail-401",
    )
    with_fallback = catalog.model_group_create(
        actor="test",
        name="badkey-then-b",
        members=[{"model": misconfigured}, {"model": mock_catalog["models"]["b"]}],
    )
    alone = catalog.model_group_create(
        actor="test", name="badkey", members=[{"model": misconfigured}]
    )
    tenant = GatewayTenant("badkey", gw_org, [with_fallback, alone], 1_000_000)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    # when
    served = httpx.post(
        f"{live.url}/v1/chat/completions",
        headers=tenant.headers(),
        json={**body, "model": "badkey-then-b"},
    )
    failed = httpx.post(
        f"{live.url}/v1/chat/completions",
        headers=tenant.headers(),
        json={**body, "model": "badkey"},
    )
    # then
    assert served.status_code == 200 and served.json()["model"] == "mock-b"
    assert failed.status_code == 502
    assert failed.json()["error"]["type"] == "upstream_error"
    assert "HTTP 401" in failed.json()["error"]["message"]
