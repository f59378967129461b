"""Every Redis name the control plane and the gateway share: the one place a `tg:` key is spelled.

Lua scripts get these names substituted into their text at import (livestate/scripts.py) or
passed as KEYS; nothing else builds a `tg:` name. The wire format of each hash, with units:

  tg:keys         hash  key hash -> KeySnapshot JSON (also under the previous hash in a grace)
  tg:keys:retired zset  key id -> retired at (s): retired keys whose tg:kacct may remain, until
                        nothing is in flight or unsettled for them
  tg:teams        hash  team pk -> TeamSnapshot JSON
  tg:catalog      str   upstreams, models and model groups (JSON)
  tg:health       hash  model public id -> {status, checked}: probe verdicts, kept out of the
                        catalog so a probe round does not make every gateway rebuild it
  tg:changes      stream of {kind, id, hashes}: what each gateway reloads
  tg:acct:{team}  hash  bal, pspend, ver: the settled balance and period spend (micro-credits)
                        at ledger version `ver`, from Postgres; pend: charged by the gateway,
                        not yet settled; resv: reserved by calls in flight and open jobs
  tg:kacct:{key}  hash  spent (micro-credits charged to the key, settled or not), resv
  tg:rl:{k|t}:{id}:{r|t}:{minute}  sliding-window counters (requests / tokens per minute)
  tg:par:{team}   zset  request id -> admission time (ms): the team's parallel slots
  tg:inflight     hash  request id -> {team, org, key, reserve, ts, inst}: calls admitted, not
                        settled; each is a lease held by gateway instance `inst` (seat#token),
                        with its progress (prog, caps) while it streams (livestate/leases.py)
  tg:gw:beats     zset  gateway instance id -> its last heartbeat (ms, Redis's clock)
  tg:gw:seats     hash  seat -> the instance id (seat#incarnation) that holds it now
  tg:gw:reaper    str   the lease reaper's lock: one process sweeps at a time (short expiry)
  tg:usage        stream of settlement records {rec, charged}; consumer group `settlers`
  tg:usage:dead   stream of records that could not be settled, for a person to look at
  tg:job:{id}     hash  a job's live state (status, fee, calls, failed, in, out, cost, price)
  tg:jobs:open    zset  job id -> opened at (ms)
"""

PREFIX = "tg:"

# Snapshots the control plane publishes and every gateway follows.
KEY_SNAPSHOTS = "tg:keys"
RETIRED_KEYS = "tg:keys:retired"
TEAM_SNAPSHOTS = "tg:teams"
CATALOG = "tg:catalog"
HEALTH = "tg:health"
CHANGES = "tg:changes"
CHANGES_MAXLEN = 100_000

# Per-call state written by the gateway's scripts.
ACCOUNT_PREFIX = "tg:acct:"
KEY_ACCOUNT_PREFIX = "tg:kacct:"
PARALLEL_PREFIX = "tg:par:"
KEY_RATE_PREFIX = "tg:rl:k:"
TEAM_RATE_PREFIX = "tg:rl:t:"
INFLIGHT = "tg:inflight"
# Gateway instances and their leases (livestate/leases.py).
GATEWAY_BEATS = "tg:gw:beats"
GATEWAY_SEATS = "tg:gw:seats"
LEASE_REAPER_LOCK = "tg:gw:reaper"
USAGE_STREAM = "tg:usage"
SETTLER_GROUP = "settlers"
DEAD_LETTERS = "tg:usage:dead"
JOB_PREFIX = "tg:job:"
OPEN_JOBS = "tg:jobs:open"
# The gateway's response cache (proxy/cache.py); Django's own cache uses another prefix.
RESPONSE_CACHE_PREFIX = "tg:cache:"

# Written by workers, read by /metrics and /health/ready.
METRICS_USAGE = "tg:metrics:usage"  # hash: "{team pk}|{counter}|{model}" -> integer
METRICS_SETTLE_LAG = "tg:metrics:settle_lag"  # hash: bucket bound (s) -> count, plus "sum"
TASKS_LAST_SUCCESS = "tg:tasks:last_success"  # hash: task name -> unix time of last success
TASKS_WATCH_SINCE = "tg:tasks:watch_since"  # unix time heartbeats were first read or written
LITELLM_LOCK_PREFIX = "tg:litellm:lock:"


def acct_key(team_id: int) -> str:
    return f"{ACCOUNT_PREFIX}{team_id}"


def key_acct_key(key_id: int) -> str:
    return f"{KEY_ACCOUNT_PREFIX}{key_id}"


def parallel_key(team_id: int) -> str:
    return f"{PARALLEL_PREFIX}{team_id}"


def key_rate_key(key_id: int, unit: str) -> str:
    """`unit` is "r" (requests) or "t" (tokens); the script appends the minute."""
    return f"{KEY_RATE_PREFIX}{key_id}:{unit}"


def team_rate_key(team_id: int, unit: str) -> str:
    return f"{TEAM_RATE_PREFIX}{team_id}:{unit}"


def job_key(job_id: str) -> str:
    """A job's hash; with an empty id, a name that never exists (scripts take a fixed arity)."""
    return f"{JOB_PREFIX}{job_id}"


def litellm_lock_key(kind: str, sync_id: int) -> str:
    return f"{LITELLM_LOCK_PREFIX}{kind}:{sync_id}"
