"""Prices per pricing mode and the token estimates behind reservations."""

from livestate.snapshots import TeamPricing
from proxy import pricing
from proxy.tokens import estimate_prompt_tokens, estimate_text_tokens, reserve_input_tokens
from proxy.usage import Usage
from tests.helpers.gateway_state import catalog_raw, model, replica_with

ROUTE = replica_with(
    catalog_raw({"m1": model("m1", in_price=1_000_000, out_price=3_000_000)}, {})
).catalog.routes_by_name["m1"]


def test_model_prices_charge_each_models_per_token_prices():
    # 1,000,000 micro-credits per million input tokens: 1 per token
    assert pricing.price(TeamPricing(), ROUTE, Usage(1000, 100)) == 1000 + 300


def test_cost_markup_charges_the_provider_cost_times_credits_per_usd():
    team = TeamPricing(mode="cost_markup", per_usd=2_000_000)  # 2 credits per USD
    cost = pricing.call_cost(ROUTE, Usage(1000, 100))
    assert cost == 500 + 150
    assert pricing.price(team, ROUTE, Usage(1000, 100)) == 2 * cost


def test_per_tokens_charges_per_unit_rounding_half_up_and_reserving_up():
    team = TeamPricing(mode="per_tokens", unit_tokens=1000, unit_price=10)
    assert pricing.price(team, ROUTE, Usage(1000, 49)) == 10  # 10.49 -> 10
    assert pricing.price(team, ROUTE, Usage(1000, 50)) == 11  # 10.5 -> 11
    assert pricing.price(team, ROUTE, Usage(1000, 1), round_up=True) == 11


def test_per_job_charges_nothing_per_call_and_the_job_fee_per_type():
    team = TeamPricing(mode="per_job", job_price=500, job_prices={"summarize": 200})
    assert team.per_job
    assert pricing.price(team, ROUTE, Usage(10_000, 10_000)) == 0
    assert pricing.job_fee(team, "summarize") == 200
    assert pricing.job_fee(team, "other") == 500
    assert pricing.job_fee(TeamPricing(job_price=500), "other") == 0  # not priced per job


def test_a_reservation_never_undercovers_the_charge():
    for in_t, out_t in ((1, 1), (3, 7), (999, 1)):
        for team in (
            TeamPricing(),
            TeamPricing(mode="cost_markup", per_usd=1_250_000),
            TeamPricing(mode="per_tokens", unit_tokens=7, unit_price=3),
        ):
            reserved = pricing.price(team, ROUTE, Usage(in_t, out_t), round_up=True)
            assert reserved >= pricing.price(team, ROUTE, Usage(in_t, out_t))


def test_token_estimates():
    assert estimate_text_tokens(0) == 0
    assert estimate_text_tokens(9) == 3  # 4 bytes a token, rounded up
    assert reserve_input_tokens(300) == 300 // 3 + 16
    chat = {"messages": [{"role": "user", "content": "12345678"}, {"content": None}]}
    assert estimate_prompt_tokens(chat) == (4 + 2) + (4 + 0) + 3
    parts = {"messages": [{"content": [{"type": "text", "text": "abcd"}, {"text": "efgh"}]}]}
    assert estimate_prompt_tokens(parts) == 4 + estimate_text_tokens(len(b"abcd efgh")) + 3
    assert estimate_prompt_tokens({"prompt": ["abcd", "abcdefgh"]}) == 1 + 2
    assert estimate_prompt_tokens({"input": "abcdefgh"}) == 2
