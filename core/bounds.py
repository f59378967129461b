"""Bounds set by what stores or reads a value, shared by the control plane and the gateway.

Only facts that both sides must agree on live here (the gateway imports core and livestate
only); the domain's own rules live in each app's rules.py."""

import re

# PositiveIntegerField columns are Postgres `integer`: a larger value is a DataError (a 500),
# so integer inputs stored in them carry this as their maximum.
INT_MAX = 2**31 - 1

# A job type, as the gateway accepts it when a job is opened and as a team's job prices are
# keyed: the gateway refuses what the control plane could not price, and the reverse.
JOB_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}$")


def bound_problem(value, low, high, *, kind: type = int) -> str | None:
    """Why `value` is not a number from `low` to `high` (inclusive), or None; worded as Django
    and DRF word it, so a service's refusal reads like a form's. `kind` float takes ints too."""
    if isinstance(value, bool) or not isinstance(value, int if kind is int else int | float):
        return "A valid integer is required." if kind is int else "A valid number is required."
    if value < low:
        return f"Ensure this value is greater than or equal to {low}."
    if value > high:
        return f"Ensure this value is less than or equal to {high}."
    return None
