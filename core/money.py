"""The only place that converts between decimal strings and integer micro-units. Never float."""

import decimal
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICROS = 1_000_000
# The largest amount and the largest balance, in micro-credits (10^9 credits). Far inside
# BIGINT, and below 2^53 so the gateway's Lua scripts (IEEE doubles) stay exact.
MAX_MICROS = 10**15


class MoneyError(ValueError):
    pass


def parse_micros(value: str | int | Decimal, *, allow_negative: bool = False) -> int:
    """Parse "12.5" into 12_500_000 micro-units; at most 6 decimal places."""
    if isinstance(value, float):
        raise MoneyError('Send amounts as decimal strings such as "12.50", not floats.')
    # A bounded, exact context: in the default one "1e999990" costs half a minute of CPU,
    # "1e999999999" overflows, and digits past the 28th are rounded away silently.
    with decimal.localcontext() as ctx:
        ctx.prec, ctx.Emax = 40, 30
        ctx.traps[decimal.Inexact] = True
        try:
            amount = Decimal(str(value).strip())
            if not amount.is_finite():
                raise MoneyError("Amounts must be finite numbers.")
            micros = amount * MICROS
        except decimal.Overflow as exc:  # a subclass of Inexact: caught first
            raise MoneyError("The amount is too large.") from exc
        except decimal.Inexact as exc:
            raise MoneyError("Amounts have at most 6 decimal places.") from exc
        except InvalidOperation as exc:
            raise MoneyError(f'{value!r} is not a decimal amount such as "12.50".') from exc
    if micros != micros.to_integral_value():
        raise MoneyError("Amounts have at most 6 decimal places.")
    micros_int = int(micros)
    if micros_int < 0 and not allow_negative:
        raise MoneyError("The amount must not be negative.")
    if abs(micros_int) > MAX_MICROS:
        raise MoneyError(f"The amount is too large (at most {MAX_MICROS // MICROS}).")
    return micros_int


def format_micros(micros: int | None) -> str | None:
    """12_500_000 -> "12.500000": exact, fixed 6 places, as a string so JSON keeps it exact."""
    if micros is None:
        return None
    return str((Decimal(micros) / MICROS).quantize(Decimal("0.000001")))


def price_for_tokens(tokens: int, per_million_micros: int) -> int:
    """Micro-units for `tokens` at a price per 1M tokens, rounded half up to the micro-unit."""
    return int((Decimal(tokens) * per_million_micros / MICROS).quantize(0, ROUND_HALF_UP))


def tokens_price(tokens: int, per_million_micros: int, *, round_up: bool = False) -> int:
    """Integer-only version of price_for_tokens for the gateway's hot path (same rounding,
    or rounded up when reserving, so a reservation is never below the price it covers)."""
    numerator = tokens * per_million_micros
    if round_up:
        return -(-numerator // MICROS)
    return (numerator + MICROS // 2) // MICROS


def display_micros(micros: int | None, *, places: int = 2, grouping: bool = True) -> str:
    """12_500_000 -> "12.50" for people (and form inputs, with grouping off): at least
    `places` decimals, every significant one up to 6, so nothing is rounded away; "" for None."""
    if micros is None:
        return ""
    value = Decimal(micros) / MICROS  # exact: at most 6 places
    whole, _, frac = (f"{value:,.6f}" if grouping else f"{value:.6f}").partition(".")
    frac = frac.rstrip("0").ljust(places, "0")
    return f"{whole}.{frac}" if frac else whole
