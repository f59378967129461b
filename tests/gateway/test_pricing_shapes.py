"""Every usage shape priced to the micro-unit, and reservations that cover each worst case."""

import pytest

from livestate.snapshots import TeamPricing
from proxy import pricing
from proxy.pricing import Demand
from proxy.usage import Usage, from_anthropic, from_openai, from_responses
from tests.helpers.gateway_state import catalog_raw, model, replica_with

PRICED = model(
    "priced",
    in_price=3_000_000,  # 3 micro-credits a token
    out_price=15_000_000,
    cr_price=300_000,
    cw_price=3_750_000,
    rs_price=20_000_000,
    ai_price=40_000_000,
    ao_price=80_000_000,
    img_price=40_000,
    img_cost=20_000,
    img_table={"1024x1024|hd": [40_000, 80_000], "1792x1024": [60_000, 120_000]},
    sec_price=100,
    chr_price=15_000_000,
)
CATALOG = replica_with(catalog_raw({"p": PRICED, "plain": model("plain")}, {})).catalog
ROUTE = CATALOG.routes_by_name["priced"]
PLAIN = CATALOG.routes_by_name["plain"]
MODEL_PRICES = TeamPricing()


def test_each_token_line_has_its_own_rate_and_the_sum_is_rounded_once():
    u = Usage(1000, 500, cache_read=600, cache_write=100, reasoning=200, audio_in=50, audio_out=30)
    exact = (
        (1000 - 600 - 100 - 50) * 3_000_000
        + 600 * 300_000
        + 100 * 3_750_000
        + 50 * 40_000_000
        + (500 - 200 - 30) * 15_000_000
        + 200 * 20_000_000
        + 30 * 80_000_000
    )
    assert pricing.price(MODEL_PRICES, ROUTE, u) == (exact + 500_000) // 1_000_000


def test_rounding_is_half_up_on_the_exact_sum_not_per_line():
    # 5 cache reads at 0.3 (1.5) and 2 cache writes at 3.75 (7.5): 9.0 -> 9, where rounding
    # each line would give 2 + 8 = 10
    assert pricing.price(MODEL_PRICES, ROUTE, Usage(7, 0, cache_read=5, cache_write=2)) == 9
    # 2 cached tokens at 0.3: 0.6 -> 1
    assert pricing.price(MODEL_PRICES, ROUTE, Usage(2, 0, cache_read=2)) == 1


def test_defaults_reasoning_at_the_output_price_cache_reads_at_the_input_price():
    u = Usage(100, 100, cache_read=40, reasoning=60)
    assert pricing.price(MODEL_PRICES, PLAIN, u) == pricing.price(
        MODEL_PRICES, PLAIN, Usage(100, 100)
    )


def test_images_are_priced_by_size_and_quality_from_the_table_then_the_default():
    def images(n, size, quality):
        return Usage(images=n, image_size=size, image_quality=quality)

    assert pricing.price(MODEL_PRICES, ROUTE, images(2, "1024x1024", "hd")) == 160_000
    assert pricing.price(MODEL_PRICES, ROUTE, images(1, "1792x1024", "hd")) == 120_000
    assert pricing.price(MODEL_PRICES, ROUTE, images(3, "512x512", "")) == 120_000
    assert pricing.call_cost(ROUTE, images(2, "1024x1024", "hd")) == 80_000


def test_audio_seconds_and_characters():
    assert pricing.price(MODEL_PRICES, ROUTE, Usage(audio_ms=12_345)) == 1235  # 1234.5 -> up
    assert pricing.price(MODEL_PRICES, ROUTE, Usage(characters=1000)) == 15_000


def test_per_token_teams_pay_the_model_price_for_what_is_not_tokens():
    team = TeamPricing(mode="per_tokens", unit_tokens=1000, unit_price=10)
    u = Usage(1000, 0, images=1, image_size="1024x1024", image_quality="hd")
    assert pricing.price(team, ROUTE, u) == 10 + 80_000


def test_cost_markup_scales_the_cost_of_every_line():
    team = TeamPricing(mode="cost_markup", per_usd=2_000_000)
    u = Usage(images=1, image_size="1792x1024")
    assert pricing.price(team, ROUTE, u) == 2 * 60_000


@pytest.mark.parametrize(
    "team",
    [
        MODEL_PRICES,
        TeamPricing(mode="cost_markup", per_usd=1_250_000),
        TeamPricing(mode="per_tokens", unit_tokens=7, unit_price=3),
    ],
)
def test_the_worst_case_covers_every_split_of_the_tokens(team):
    demand = Demand(input=100, output=50, answers=3)
    reserved = pricing.worst_price(team, ROUTE, demand)
    for u in (
        Usage(100, 150),
        Usage(100, 150, cache_write=100, reasoning=150),
        Usage(100, 150, audio_in=100, audio_out=150),
        Usage(100, 150, cache_read=100),
    ):
        assert reserved >= pricing.price(team, ROUTE, u)


def test_n_answers_multiply_the_output_reservation():
    one = pricing.worst_price(MODEL_PRICES, PLAIN, Demand(input=0, output=100))
    ten = pricing.worst_price(MODEL_PRICES, PLAIN, Demand(input=0, output=100, answers=10))
    assert ten == 10 * one


def test_an_image_reservation_is_exact_when_size_and_quality_are_asked():
    d = Demand(images=2, image_size="1024x1024", image_quality="hd")
    assert pricing.worst_price(MODEL_PRICES, ROUTE, d) == 160_000
    # quality unknown: the dearest entry of that size, or the default
    assert (
        pricing.worst_price(MODEL_PRICES, ROUTE, Demand(images=1, image_size="1024x1024")) == 80_000
    )


def test_openai_usage_details():
    u = from_openai(
        {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 60, "audio_tokens": 10},
            "completion_tokens_details": {"reasoning_tokens": 20, "audio_tokens": 5},
        }
    )
    assert u == Usage(100, 50, cache_read=60, audio_in=10, reasoning=20, audio_out=5)
    # nonsense counts are zero, and a part never exceeds its whole
    u = from_openai(
        {"prompt_tokens": 10, "completion_tokens": "x",
         "prompt_tokens_details": {"cached_tokens": 99}, "completion_tokens_details": None}
    )  # fmt: skip
    assert u == Usage(10, 0, cache_read=10)
    assert from_openai({"prompt_tokens": True, "completion_tokens": -3}) == Usage(0, 0)


def test_anthropic_usage_adds_cache_reads_and_writes_to_the_input():
    u = from_anthropic(
        {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 100,
         "cache_creation_input_tokens": 20}
    )  # fmt: skip
    assert u == Usage(125, 7, cache_read=100, cache_write=20)


def test_responses_usage():
    u = from_responses(
        {"input_tokens": 30, "output_tokens": 40, "input_tokens_details": {"cached_tokens": 10},
         "output_tokens_details": {"reasoning_tokens": 25}}
    )  # fmt: skip
    assert u == Usage(30, 40, cache_read=10, reasoning=25)


def test_the_record_carries_only_the_nonzero_breakdown():
    assert Usage(1, 2).record_fields() == {}
    assert Usage(10, 5, cache_read=3, reasoning=1, images=2).record_fields() == {
        "cr": 3,
        "rs": 1,
        "img": 2,
    }
