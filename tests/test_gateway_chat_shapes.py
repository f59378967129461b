"""Chat completions in every usage shape, priced exactly: n answers, cached and reasoning tokens,
unary and streamed, a client leaving mid-stream, and n under concurrency on a few credits."""

import httpx
import openai
import pytest
from django.db.models import Sum

from billing.models import LedgerEntry, UsageRecord
from billing.settlement import settle_usage
from modelgroups import services as catalog
from tests.helpers.gateway import concurrently, redis_account
from tests.helpers.ledger import posted_calls
from tests.helpers.tenants import GatewayTenant
from tests.helpers.waiting import eventually

HI = [{"role": "user", "content": "hi there, how are you today?"}]
# micro-credits per 1M tokens: input 1 a token, cache reads 0.25, output 2, reasoning 5
PRICES = {
    "input_price_micros": 1_000_000,
    "output_price_micros": 2_000_000,
    "cache_read_price_micros": 250_000,
    "reasoning_price_micros": 5_000_000,
    "input_cost_micros": 500_000,
    "output_cost_micros": 1_000_000,
}


def sdk(live, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=secret, max_retries=0, timeout=10)


def tenant_on(mock_catalog, gw_org, name, upstream_model, credits=10_000_000, **prices):
    model = catalog.model_create(
        actor="test",
        name=f"m-{name}",
        upstream=mock_catalog["upstream"],
        upstream_model=upstream_model,
        max_output_tokens=100,
        **{**PRICES, **prices},
    )
    group = catalog.model_group_create(actor="test", name=name, members=[{"model": model}])
    return GatewayTenant(name, gw_org, [group], credits)


def formula(usage: dict) -> int:
    """The documented price: every line at its rate, summed exactly, rounded once half up."""
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
    exact = (
        (prompt - cached) * 1_000_000
        + cached * 250_000
        + (completion - reasoning) * 2_000_000
        + reasoning * 5_000_000
    )
    return (exact + 500_000) // 1_000_000


def charged(team) -> int:
    entries = LedgerEntry.objects.filter(account__team=team, kind=LedgerEntry.Kind.USAGE)
    return -(entries.aggregate(s=Sum("amount_micros"))["s"] or 0)


def test_n_answers_are_charged_in_full_and_were_reserved(live, mock_catalog, gw_org):
    tenant = tenant_on(mock_catalog, gw_org, "three", "mock-reply-40")
    answer = sdk(live, tenant.secret).chat.completions.create(
        model="three", messages=HI, n=3, max_tokens=20
    )
    assert [c.index for c in answer.choices] == [0, 1, 2]
    usage = answer.usage.model_dump()
    assert usage["completion_tokens"] == 3 * 20
    settle_usage()
    record = UsageRecord.objects.get(team=tenant.team)
    assert record.output_tokens == 60
    assert record.price_micros == formula(usage) == charged(tenant.team)
    entry = LedgerEntry.objects.get(account__team=tenant.team, kind=LedgerEntry.Kind.USAGE)
    assert "uncollected_micros" not in entry.metadata  # the reservation covered all three
    assert redis_account(tenant.team)["resv"] == 0


def test_credits_for_one_answer_do_not_admit_ten(live, mock_catalog, gw_org):
    # 10 answers of up to 50 tokens reserve 1,000 micro-credits of output alone; one fits
    tenant = tenant_on(mock_catalog, gw_org, "ten", "mock-a", credits=400)
    client = sdk(live, tenant.secret)
    assert client.chat.completions.create(model="ten", messages=HI, max_tokens=50).choices
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="ten", messages=HI, max_tokens=50, n=10)
    assert caught.value.code == "insufficient_quota"


def test_a_bad_n_is_a_400_naming_it_and_reserves_nothing(live, mock_catalog, gw_org):
    tenant = tenant_on(mock_catalog, gw_org, "badn", "mock-a")
    before = redis_account(tenant.team)
    for n in (0, 129, "2"):
        r = httpx.post(
            f"{live.url}/v1/chat/completions",
            headers=tenant.headers(),
            json={"model": "badn", "messages": HI, "n": n},
        )
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "n"
    assert redis_account(tenant.team) == before


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_cached_and_reasoning_tokens_are_priced_at_their_own_rates(
    live, mock_catalog, gw_org, stream
):
    # 7 cached tokens at 0.25 = 1.75: the exact sum's fraction decides the rounding
    tenant = tenant_on(mock_catalog, gw_org, f"shapes-{stream}", "mock-cached-7-reasoning-9")
    client = sdk(live, tenant.secret)
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=f"shapes-{stream}",
                messages=HI,
                max_tokens=30,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        usage = chunks[-1].usage.model_dump()
    else:
        usage = client.chat.completions.create(
            model=f"shapes-{stream}", messages=HI, max_tokens=30
        ).usage.model_dump()
    assert usage["prompt_tokens_details"]["cached_tokens"] == 7
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 9
    settle_usage()
    record = UsageRecord.objects.get(team=tenant.team)
    assert (record.cache_read_tokens, record.reasoning_tokens) == (7, 9)
    assert (record.input_tokens, record.output_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert record.price_micros == formula(usage) == charged(tenant.team)
    # the ledger entry says what it charged for
    entry = LedgerEntry.objects.get(account__team=tenant.team, kind=LedgerEntry.Kind.USAGE)
    assert entry.metadata["cache_read_tokens"] == 7
    assert entry.metadata["reasoning_tokens"] == 9


def test_a_stream_left_mid_way_is_charged_its_estimate_at_the_plain_rates(
    live, mock_catalog, gw_org
):
    tenant = tenant_on(mock_catalog, gw_org, "leaver", "mock-cached-7-chunk-delay-20-reply-400")
    with httpx.stream(
        "POST",
        f"{live.url}/v1/chat/completions",
        headers=tenant.headers(),
        json={"model": "leaver", "messages": HI, "stream": True, "max_tokens": 1000},
    ) as r:
        for seen, _ in enumerate(r.iter_raw(), start=1):
            if seen >= 5:
                break

    def settled():
        settle_usage()
        return UsageRecord.objects.filter(team=tenant.team).first()

    record = eventually(settled, timeout=10, what="the record of the stream left mid-way")
    assert 0 < record.output_tokens < 400
    # no usage was reported: nothing is known to be cached, so every token is at its plain rate
    assert record.cache_read_tokens == 0
    assert record.price_micros == record.input_tokens * 1 + record.output_tokens * 2
    assert redis_account(tenant.team)["resv"] == 0


def test_hundreds_of_concurrent_n_calls_never_spend_more_than_the_credits(
    live, mock_catalog, gw_org
):
    granted = 3_000
    tenant = tenant_on(mock_catalog, gw_org, "poor-n", "mock-reply-40", credits=granted)
    body = {"model": "poor-n", "messages": HI, "n": 4, "max_tokens": 25}
    responses = concurrently(live.url, "/v1/chat/completions", tenant.headers(), body, 200)
    settle_usage()
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert 1 <= len(ok) < 200
    assert {r.json()["error"]["type"] for r in refused} == {"insufficient_quota"}
    assert all(r.json()["usage"]["completion_tokens"] == 100 for r in ok)
    spent = charged(tenant.team)
    assert spent == sum(formula(r.json()["usage"]) for r in ok) <= granted
    assert posted_calls(tenant.team) == len(ok)
    tenant.team.account.refresh_from_db()
    assert tenant.team.account.balance_micros == granted - spent >= 0
    account = redis_account(tenant.team)
    assert account["resv"] == 0 and account["pend"] == 0
