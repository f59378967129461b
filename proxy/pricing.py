"""What a call costs us and what it costs the team, in each pricing mode.

Integer micro-units only (this runs per request). Cost is micro-USD from the model's provider
costs; price is micro-credits. Reservations round up, charges round half up, so a reservation
always covers the charge it stands for.
"""

from core.money import MICROS, tokens_price

MODEL_PRICES = "model_prices"
COST_MARKUP = "cost_markup"
PER_TOKENS = "per_tokens"
PER_JOB = "per_job"


def _scaled(amount: int, numerator: int, denominator: int, round_up: bool) -> int:
    product = amount * numerator
    if round_up:
        return -(-product // denominator)
    return (product + denominator // 2) // denominator


def call_cost(route, in_t: int, out_t: int, *, round_up: bool = False) -> int:
    return tokens_price(in_t, route.in_cost, round_up=round_up) + tokens_price(
        out_t, route.out_cost, round_up=round_up
    )


class Pricing:
    """A team's pricing, built once per team snapshot."""

    __slots__ = ("job_price", "job_prices", "mode", "per_usd", "unit_price", "unit_tokens")

    def __init__(self, raw: dict | None):
        raw = raw or {}
        self.mode = raw.get("mode") or MODEL_PRICES
        self.per_usd = raw.get("per_usd") or 0
        self.unit_tokens = raw.get("unit_tokens") or 1
        self.unit_price = raw.get("unit_price") or 0
        self.job_price = raw.get("job_price") or 0
        self.job_prices = raw.get("job_prices") or {}

    @property
    def per_job(self) -> bool:
        return self.mode == PER_JOB

    def price(self, route, in_t: int, out_t: int, *, round_up: bool = False) -> int:
        """The team's price for one call's tokens on this route (0 per call when per job)."""
        mode = self.mode
        if mode == MODEL_PRICES:
            return tokens_price(in_t, route.in_price, round_up=round_up) + tokens_price(
                out_t, route.out_price, round_up=round_up
            )
        if mode == COST_MARKUP:
            cost = call_cost(route, in_t, out_t, round_up=round_up)
            return _scaled(cost, self.per_usd, MICROS, round_up)
        if mode == PER_TOKENS:
            return _scaled(in_t + out_t, self.unit_price, self.unit_tokens, round_up)
        return 0

    def job_fee(self, job_type: str) -> int:
        if self.mode != PER_JOB:
            return 0
        return self.job_prices.get(job_type, self.job_price)
