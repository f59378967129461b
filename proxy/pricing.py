"""What a call costs us and what it costs the team, in each pricing mode, for every usage shape.

Integer micro-units only (this runs per request). Cost is micro-USD from the model's provider
costs; price is micro-credits. A call's lines are added exactly, then rounded once, half up,
to the micro-unit: plain input tokens, cache reads, cache writes, audio input tokens, plain
output tokens, reasoning tokens, audio output tokens (each at its price per 1M tokens), images
(per image, by size and quality), audio (per second, counted in milliseconds) and characters
(per 1M). A reservation prices the worst case (every input token at the dearest input rate,
every output token of every answer at the dearest output rate) rounded up, so it always
covers the charge it stands for. A team's pricing itself is data, published with its
snapshot (livestate.snapshots.TeamPricing).

Per-token team pricing (PER_TOKENS) charges its unit price for every token, and the model's own
prices for what is not tokens (images, audio seconds, characters): a flat token price must not
make an image free.
"""

from dataclasses import dataclass, field

from core.money import MICROS
from livestate.snapshots import COST_MARKUP, MODEL_PRICES, PER_JOB, PER_TOKENS, TeamPricing
from proxy.usage import Usage


@dataclass(slots=True, frozen=True)
class Rates:
    """One side of a model's prices (its costs, or its prices): per 1M tokens unless named."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    audio_in: int = 0
    audio_out: int = 0
    image: int = 0  # per image, when the table has no entry for its size and quality
    images: dict[str, int] = field(default_factory=dict)  # "1024x1024|hd" or "1024x1024"
    second: int = 0  # per second of audio
    character: int = 0  # per 1M characters

    @property
    def max_input(self) -> int:
        return max(self.input, self.cache_read, self.cache_write, self.audio_in)

    @property
    def max_output(self) -> int:
        return max(self.output, self.reasoning, self.audio_out)

    def image_price(self, size: str, quality: str) -> int:
        table = self.images
        if not table:
            return self.image
        if size:
            found = table.get(f"{size}|{quality}") if quality else None
            if found is None:
                found = table.get(size)
            if found is not None:
                return found
        return self.image

    def worst_image(self, size: str, quality: str) -> int:
        """The most an image asked this way can cost: exact when size and quality are given,
        else the dearest entry it could fall on."""
        if size and quality:
            return self.image_price(size, quality)
        candidates = [self.image]
        for name, value in self.images.items():
            s, _, q = name.partition("|")
            if (not size or s == size) and (not quality or not q or q == quality):
                candidates.append(value)
        return max(candidates)


def rates_of(raw: dict, side: str) -> Rates:
    """The catalog's model entry as Rates; side is "cost" or "price". Fields a snapshot from
    before a price existed lacks take the documented default (mirrors/gateway.py resolves
    them when publishing)."""
    inp, out = raw[f"in_{side}"], raw[f"out_{side}"]
    table = raw.get("img_table") or {}
    column = 0 if side == "cost" else 1
    return Rates(
        input=inp,
        output=out,
        cache_read=raw.get(f"cr_{side}", inp),
        cache_write=raw.get(f"cw_{side}", inp),
        reasoning=raw.get(f"rs_{side}", out),
        audio_in=raw.get(f"ai_{side}", inp),
        audio_out=raw.get(f"ao_{side}", out),
        image=raw.get(f"img_{side}", 0),
        images={name: pair[column] for name, pair in table.items()},
        second=raw.get(f"sec_{side}", 0),
        character=raw.get(f"chr_{side}", 0),
    )


def _scaled(amount: int, numerator: int, denominator: int, round_up: bool) -> int:
    product = amount * numerator
    if round_up:
        return -(-product // denominator)
    return (product + denominator // 2) // denominator


def _rounded(numerator: int, round_up: bool) -> int:
    """Micro-units from an exact amount in millionths of a micro-unit."""
    if round_up:
        return -(-numerator // MICROS)
    return (numerator + MICROS // 2) // MICROS


def _token_lines(rates: Rates, u: Usage) -> int:
    """The token lines, exactly (millionths of a micro-unit)."""
    plain_in = max(u.input - u.cache_read - u.cache_write - u.audio_in, 0)
    plain_out = max(u.output - u.reasoning - u.audio_out, 0)
    total = plain_in * rates.input + plain_out * rates.output
    if u.cache_read:
        total += u.cache_read * rates.cache_read
    if u.cache_write:
        total += u.cache_write * rates.cache_write
    if u.audio_in:
        total += u.audio_in * rates.audio_in
    if u.reasoning:
        total += u.reasoning * rates.reasoning
    if u.audio_out:
        total += u.audio_out * rates.audio_out
    return total


def _units(rates: Rates, images: int, per_image: int, audio_ms: int, characters: int) -> int:
    """What is not tokens, exactly: images, audio time, characters."""
    return (
        images * per_image * MICROS + audio_ms * rates.second * 1000 + characters * rates.character
    )


def _unit_lines(rates: Rates, u: Usage) -> int:
    if not (u.images or u.audio_ms or u.characters):
        return 0
    per_image = rates.image_price(u.image_size, u.image_quality) if u.images else 0
    return _units(rates, u.images, per_image, u.audio_ms, u.characters)


def call_cost(route, u: Usage, *, round_up: bool = False) -> int:
    rates = route.costs
    return _rounded(_token_lines(rates, u) + _unit_lines(rates, u), round_up)


def price(pricing: TeamPricing, route, u: Usage, *, round_up: bool = False) -> int:
    """The team's price for one call's usage on this route (0 per call when per job)."""
    mode = pricing.mode
    if mode == MODEL_PRICES:
        rates = route.prices
        return _rounded(_token_lines(rates, u) + _unit_lines(rates, u), round_up)
    if mode == COST_MARKUP:
        return _scaled(call_cost(route, u, round_up=round_up), pricing.per_usd, MICROS, round_up)
    if mode == PER_TOKENS:
        tokens = _scaled(u.input + u.output, pricing.unit_price, pricing.unit_tokens, round_up)
        return tokens + _rounded(_unit_lines(route.prices, u), round_up)
    return 0


@dataclass(slots=True)
class Demand:
    """The worst case a call may use, for its reservation: input tokens (an upper estimate),
    output tokens per answer times the answers asked (`n`, `best_of`), images, audio, chars."""

    input: int = 0
    output: int = 0
    answers: int = 1
    images: int = 0
    image_size: str = ""
    image_quality: str = ""
    audio_ms: int = 0
    characters: int = 0

    @property
    def tokens(self) -> int:
        return self.input + self.output * self.answers


def _worst_tokens(rates: Rates, d: Demand) -> int:
    return d.input * rates.max_input + d.output * d.answers * rates.max_output


def _worst_units(rates: Rates, d: Demand) -> int:
    per_image = rates.worst_image(d.image_size, d.image_quality) if d.images else 0
    return _units(rates, d.images, per_image, d.audio_ms, d.characters)


def worst_price(pricing: TeamPricing, route, d: Demand) -> int:
    """The most the call can be charged on this route: its reservation there."""
    mode = pricing.mode
    if mode == MODEL_PRICES:
        rates = route.prices
        return _rounded(_worst_tokens(rates, d) + _worst_units(rates, d), True)
    if mode == COST_MARKUP:
        rates = route.costs
        cost = _rounded(_worst_tokens(rates, d) + _worst_units(rates, d), True)
        return _scaled(cost, pricing.per_usd, MICROS, True)
    if mode == PER_TOKENS:
        tokens = _scaled(d.tokens, pricing.unit_price, pricing.unit_tokens, True)
        return tokens + _rounded(_worst_units(route.prices, d), True)
    return 0


def job_fee(pricing: TeamPricing, job_type: str) -> int:
    if pricing.mode != PER_JOB:
        return 0
    return pricing.job_prices.get(job_type, pricing.job_price)
