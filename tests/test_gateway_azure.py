"""An Azure OpenAI upstream (the mock's deployment routes) through the running gateway: the
deployment URL, the api-version and the api-key header, unary and streamed, its connection test
and its health probe."""

import httpx
import openai
import pytest

from billing.models import UsageRecord
from billing.settlement import settle_usage
from modelgroups import connection
from modelgroups import services as catalog
from saas import asgi
from tests.helpers.tenants import GatewayTenant
from tests.test_gateway_sdk import sdk

KEY = "azure-key-0123456789abcdef"
VERSION = "2024-10-21"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def seen(monkeypatch) -> list[dict]:
    """What reached the mock upstream: path, query and headers of each request."""
    requests: list[dict] = []
    mock = asgi.mock_upstream

    async def spy(scope, receive, send):
        if scope["type"] == "http":
            requests.append(
                {
                    "path": scope["path"],
                    "query": scope.get("query_string", b"").decode(),
                    "headers": dict(scope["headers"]),
                }
            )
        return await mock(scope, receive, send)

    monkeypatch.setattr(asgi, "mock_upstream", spy)
    return requests


@pytest.fixture
def azure(live):
    return catalog.upstream_create(
        actor="test",
        name="azure",
        kind="azure_openai",
        base_url=live.url + "/mock",  # the resource's endpoint: no /v1
        api_version=VERSION,
        api_key=KEY,
    )


@pytest.fixture
def azure_team(azure, gw_org):
    model = catalog.model_create(
        actor="test",
        name="azure-chat",
        upstream=azure,
        upstream_model="my-gpt-deployment",
        input_price_micros=1_000_000,
        output_price_micros=2_000_000,
        max_output_tokens=100,
    )
    group = catalog.model_group_create(actor="test", name="azure", members=[{"model": model}])
    return GatewayTenant("azure team", gw_org, [group], credits_micros=10_000_000)


def assert_azure_call(request: dict) -> None:
    assert request["path"] == "/mock/openai/deployments/my-gpt-deployment/chat/completions"
    assert request["query"] == f"api-version={VERSION}"
    assert request["headers"][b"api-key"] == KEY.encode()
    assert b"authorization" not in request["headers"]


def test_an_azure_deployment_answers_chat_through_the_gateway(live, azure_team, seen):
    # when
    raw = sdk(live, azure_team.secret).chat.completions.with_raw_response.create(
        model="azure", messages=HI
    )
    # then
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("Mock reply to: hi")
    assert completion.model == "azure-chat"
    [request] = seen
    assert_azure_call(request)
    settle_usage()
    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    usage = completion.usage
    assert (record.input_tokens, record.output_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert record.price_micros == round(
        (usage.prompt_tokens * 1_000_000 + usage.completion_tokens * 2_000_000) / 1_000_000
    )


def test_an_azure_deployment_streams_chat_through_the_gateway(live, azure_team, seen):
    # when
    stream = sdk(live, azure_team.secret).chat.completions.create(
        model="azure", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    # then
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content.startswith("Mock reply to: hi")
    assert chunks[-1].usage.completion_tokens > 0
    assert all(c.model == "azure-chat" for c in chunks)
    [request] = seen
    assert_azure_call(request)


def test_an_azure_upstream_without_its_key_is_not_called_as_openai(live, azure, gw_org, seen):
    # given: the same deployment, but no key: the mock answers 401 as Azure does
    bare = catalog.upstream_create(
        actor="test",
        name="azure-bare",
        kind="azure_openai",
        base_url=azure.base_url,
        api_version=VERSION,
    )
    model = catalog.model_create(
        actor="test", name="bare-chat", upstream=bare, upstream_model="my-gpt-deployment"
    )
    group = catalog.model_group_create(actor="test", name="bare", members=[{"model": model}])
    tenant = GatewayTenant("bare team", gw_org, [group], credits_micros=10_000_000)
    # when
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(live, tenant.secret).chat.completions.create(model="bare", messages=HI)
    # then: our configuration's failure, never passed on as the caller's
    assert caught.value.status_code == 502
    assert "HTTP 401" in caught.value.message
    assert b"api-key" not in seen[0]["headers"]


def test_the_connection_test_lists_an_azure_resources_models(azure, seen):
    # when
    result = connection.upstream_probe(upstream=azure)
    # then
    assert result.ok, result.message
    assert result.message.startswith("Connected: ")
    [request] = seen
    assert (request["path"], request["query"]) == ("/mock/openai/models", f"api-version={VERSION}")
    assert request["headers"][b"api-key"] == KEY.encode()


def test_the_connection_test_of_an_azure_upstream_with_a_wrong_key_fails(azure, seen):
    # given: a key the mock does not take is a 401 there only without one; so, no key at all
    catalog.upstream_update(actor="test", upstream=azure, data={"api_key": ""})
    azure.refresh_from_db()
    # when
    result = connection.upstream_probe(upstream=azure)
    # then
    assert not result.ok and result.status == 401


def test_an_azure_model_is_probed_on_its_deployment(azure, azure_team, seen):
    # given
    from modelgroups.models import Model

    model = Model.objects.get(name="azure-chat")
    # when
    health = catalog.model_health_check(model=model)
    # then
    assert health.status == "up", health.last_error
    [request] = seen
    assert_azure_call(request)


def test_the_mock_lists_an_azure_resources_models_only_with_api_version_and_key(live):
    url = live.url + "/mock/openai/models"
    assert httpx.get(url, params={"api-version": VERSION}, headers={"api-key": KEY}).json()["data"]
    no_version = httpx.get(url, headers={"api-key": KEY})
    assert no_version.status_code == 400
    assert no_version.json()["error"]["code"] == "MissingApiVersionParameter"
    assert httpx.get(url, params={"api-version": VERSION}).status_code == 401
