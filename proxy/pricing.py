"""What a call costs us and what it costs the team, in each pricing mode.

Integer micro-units only (this runs per request). Cost is micro-USD from the model's provider
costs; price is micro-credits. Reservations round up, charges round half up, so a reservation
always covers the charge it stands for. A team's pricing itself is data, published with its
snapshot (livestate.snapshots.TeamPricing).
"""

from core.money import MICROS, tokens_price
from livestate.snapshots import COST_MARKUP, MODEL_PRICES, PER_JOB, PER_TOKENS, TeamPricing


def _scaled(amount: int, numerator: int, denominator: int, round_up: bool) -> int:
    product = amount * numerator
    if round_up:
        return -(-product // denominator)
    return (product + denominator // 2) // denominator


def call_cost(route, in_t: int, out_t: int, *, round_up: bool = False) -> int:
    return tokens_price(in_t, route.in_cost, round_up=round_up) + tokens_price(
        out_t, route.out_cost, round_up=round_up
    )


def price(pricing: TeamPricing, route, in_t: int, out_t: int, *, round_up: bool = False) -> int:
    """The team's price for one call's tokens on this route (0 per call when per job)."""
    mode = pricing.mode
    if mode == MODEL_PRICES:
        return tokens_price(in_t, route.in_price, round_up=round_up) + tokens_price(
            out_t, route.out_price, round_up=round_up
        )
    if mode == COST_MARKUP:
        cost = call_cost(route, in_t, out_t, round_up=round_up)
        return _scaled(cost, pricing.per_usd, MICROS, round_up)
    if mode == PER_TOKENS:
        return _scaled(in_t + out_t, pricing.unit_price, pricing.unit_tokens, round_up)
    return 0


def job_fee(pricing: TeamPricing, job_type: str) -> int:
    if pricing.mode != PER_JOB:
        return 0
    return pricing.job_prices.get(job_type, pricing.job_price)
