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
