"""Every Redis name the control plane and the gateway share: the one place a `tg:` key is spelled.

Lua scripts get every name they touch as KEYS (livestate/scripts.py); nothing else builds a
`tg:` name. The layout is Redis Cluster's: a name's `{hash tag}` decides its slot, and a script
may only touch keys of one slot, all declared.

Per-call state is split into SHARDS shards; a team's shard is `shard_of(team id)`, and every name
one call touches (its team's account, its key's account, parallel slots, rate counters, job, and
the shard's in-flight hash and usage stream) carries the tag `{<shard>}`, so an ADMIT or a
SETTLE runs on one node. Names that no per-call script touches (the snapshots, the change feed,
metrics, task heartbeats) are global; the control plane's snapshots and their change feed share
the tag `{ctl}` so that a full publish replaces them in one MULTI.

The wire format of each name, with units (`s` = shard, `team`/`key` = primary keys):

  tg:{ctl}:keys     hash  key hash -> KeySnapshot JSON (also under the previous hash in a grace)
  tg:{ctl}:teams    hash  team pk -> TeamSnapshot JSON
  tg:{ctl}:catalog  str   upstreams, models and model groups (JSON)
  tg:{ctl}:health   hash  model public id -> {status, checked}: probe verdicts, kept out of the
                          catalog so a probe round does not make every gateway rebuild it
  tg:{ctl}:changes  stream of {kind, id, hashes}: what each gateway reloads
  tg:{s}:acct:{team}    hash  bal, pspend, ver: the settled balance and period spend
                        (micro-credits) at ledger version `ver`, from Postgres; pend: charged by
                        the gateway, not yet settled; resv: reserved by calls in flight and open
                        jobs; k<key>:s, k<key>:r: each of the team's keys' spend (micro-credits
                        charged to the key, settled or not) and reservation
  tg:{s}:rl:k:{key}     hash  the key's rate counters: r<minute>, t<minute> = requests and
                        tokens admitted in that minute since the epoch (sliding window over the
                        current and previous minute); expires 120 s after a minute's first call
  tg:{s}:rl:t:{team}    hash  the team's, likewise
  tg:{s}:par:{team}     zset  request id -> admission time (ms): the team's parallel slots
  tg:{s}:job:{id}       hash  a job's live state (status, fee, calls, failed, in, out, cost,
                        price); the shard of the team that opened it
  tg:{s}:inflight       hash  request id -> {team, org, key, reserve, ts, inst}: calls admitted,
                        not settled; each is a lease held by gateway instance `inst`
                        (seat#token), with its progress (prog, caps) while it streams
                        (livestate/leases.py)
  tg:{s}:gw:beats       zset  gateway instance id -> its last heartbeat (ms, Redis's clock); every
                        instance beats into every shard, so REAP checks liveness in its slot
  tg:{s}:gw:seats       hash  seat -> the instance id (seat#incarnation) that holds it now
  tg:{s}:usage          stream of settlement records {rec, charged}; consumer group `settlers`
  tg:{s}:usage:dead     stream of records that could not be settled, for a person to look at
  tg:{s}:jobs:open      zset  job id -> opened at (ms)
  tg:{s}:keys:retired   zset  key id -> retired at (s): retired keys whose account fields may
                        remain, until nothing is in flight or unsettled for them
  tg:{s}:resp:{team}:{id}  str  the model (public id) whose upstream stored the team's Responses
                        API response `id`: GET/DELETE /v1/responses/{id} and previous_response_id
                        go there; another team's id is not found (expires with the upstream's
                        retention, proxy/apis/responses.py)
  tg:cache:{team:digest}:u / :s   the response cache's unary and stream entries (proxy/cache.py)
  tg:{refusals}:m:{minute}  hash  "{team}|{key}|{reason}|{model}" -> calls refused in that minute
                        (since the epoch) by the gateways: team and key are primary keys, 0 when
                        no key was recognised; reason is the error's code; model as asked (may
                        be empty); expires REFUSALS_TTL_SECONDS after its last write
  tg:{refusals}:minutes zset  minute bucket name -> minute: the buckets not yet claimed for the
                        Postgres roll-up (billing/refusals.py)
  tg:{refusals}:claimed zset  claimed bucket name -> claimed at (s): buckets moved out of the
                        gateways' way, to be rolled up and deleted
  tg:{refusals}:flush:{id}  str  a gateway's flush already applied (a retried flush is a no-op)
  tg:gw:reaper          str   the lease reaper's lock: one process sweeps at a time (short expiry)
  tg:metrics:*, tg:tasks:*, tg:litellm:lock:*   workers' counters, heartbeats and locks
"""

PREFIX = "tg:"

# Per-call state is spread over this many hash tags. Changing it moves every team to another
# shard, so it needs the gateways and workers stopped, the usage streams settled (empty) and
# the accounts rebuilt (a reconcile after FLUSHALL does both): never change it on a live system.
SHARDS = 16
SHARD_RANGE = range(SHARDS)

# Snapshots the control plane publishes and every gateway follows (one slot: {ctl}).
KEY_SNAPSHOTS = "tg:{ctl}:keys"
TEAM_SNAPSHOTS = "tg:{ctl}:teams"
CATALOG = "tg:{ctl}:catalog"
HEALTH = "tg:{ctl}:health"
CHANGES = "tg:{ctl}:changes"
CHANGES_MAXLEN = 100_000

# The lease reaper's lock (livestate/leases.py): one process sweeps at a time.
LEASE_REAPER_LOCK = "tg:gw:reaper"
# Which life of Redis this is (proxy/recovery.py): a random token the first gateway to find it
# missing writes; when it vanishes or changes, Redis lost its data (flushed, restarted empty).
EPOCH = "tg:epoch"
SETTLER_GROUP = "settlers"
# The gateway's response cache (proxy/cache.py); Django's own cache uses another prefix.
RESPONSE_CACHE_PREFIX = "tg:cache:"

# Written by workers, read by /metrics and /health/ready.
METRICS_USAGE = "tg:metrics:usage"  # hash: "{team pk}|{counter}|{model}" -> integer
METRICS_SETTLE_LAG = "tg:metrics:settle_lag"  # hash: bucket bound (s) -> count, plus "sum"
TASKS_LAST_SUCCESS = "tg:tasks:last_success"  # hash: task name -> unix time of last success
TASKS_WATCH_SINCE = "tg:tasks:watch_since"  # unix time heartbeats were first read or written
LITELLM_LOCK_PREFIX = "tg:litellm:lock:"

# Refused calls, counted by the gateways per minute (proxy/refusals.py), rolled up into
# billing.RefusalHourly (billing/refusals.py). One hash tag: a flush or a claim is one script.
REFUSALS_TAG = "tg:{refusals}:"
REFUSALS_MINUTES = "tg:{refusals}:minutes"
REFUSALS_CLAIMED = "tg:{refusals}:claimed"
REFUSALS_TTL_SECONDS = 2 * 86400


def shard_of(team_id: int) -> int:
    return int(team_id) % SHARDS


def _tagged(shard: int) -> str:
    return f"tg:{{{shard}}}:"


def acct_key(team_id: int) -> str:
    return f"{_tagged(shard_of(team_id))}acct:{team_id}"


def key_fields(key_id: int) -> tuple[str, str]:
    """The key's (spent, reserved) fields in its team's account hash."""
    return f"k{key_id}:s", f"k{key_id}:r"


def parallel_key(team_id: int) -> str:
    return f"{_tagged(shard_of(team_id))}par:{team_id}"


def key_rate_key(team_id: int, key_id: int) -> str:
    return f"{_tagged(shard_of(team_id))}rl:k:{key_id}"


def team_rate_key(team_id: int) -> str:
    return f"{_tagged(shard_of(team_id))}rl:t:{team_id}"


def job_key(team_id: int, job_id: str) -> str:
    """A job's hash, in its team's shard; with an empty id, a name that never exists (scripts
    take a fixed arity)."""
    return f"{_tagged(shard_of(team_id))}job:{job_id}"


def shard_job_key(shard: int, job_id: str) -> str:
    """A job's hash found through its shard's open-jobs zset."""
    return f"{_tagged(shard)}job:{job_id}"


def inflight_key(shard: int) -> str:
    return f"{_tagged(shard)}inflight"


def usage_stream(shard: int) -> str:
    return f"{_tagged(shard)}usage"


def dead_letters(shard: int) -> str:
    return f"{_tagged(shard)}usage:dead"


def open_jobs_key(shard: int) -> str:
    return f"{_tagged(shard)}jobs:open"


def gateway_beats(shard: int) -> str:
    return f"{_tagged(shard)}gw:beats"


def gateway_seats(shard: int) -> str:
    return f"{_tagged(shard)}gw:seats"


def retired_keys_key(shard: int) -> str:
    return f"{_tagged(shard)}keys:retired"


def response_cache_keys(team_id: int, digest: str) -> tuple[str, str]:
    """(unary entry, stream entry): one tag per request, so both are read in one MGET and the
    entries spread over the cluster."""
    base = f"{RESPONSE_CACHE_PREFIX}{{{team_id}:{digest}}}"
    return base + ":u", base + ":s"


def response_cache_pattern(team_id: int) -> str:
    """A SCAN pattern for a team's response-cache entries."""
    return f"{RESPONSE_CACHE_PREFIX}{{{team_id}:*"


def refusals_bucket(minute: int) -> str:
    """The gateways' refusal counts of one minute (minutes since the epoch)."""
    return f"{REFUSALS_TAG}m:{minute}"


def refusals_claimed_bucket(minute: int, token: str) -> str:
    """A minute bucket claimed for the roll-up: a name no gateway writes to."""
    return f"{REFUSALS_TAG}c:{minute}:{token}"


def refusals_flush_mark(flush_id: str) -> str:
    return f"{REFUSALS_TAG}flush:{flush_id}"


def litellm_lock_key(kind: str, sync_id: int) -> str:
    return f"{LITELLM_LOCK_PREFIX}{kind}:{sync_id}"


def response_key(team_id: int, response_id: str) -> str:
    """Which model stored a team's Responses API response (its id as the upstream gave it)."""
    return f"{_tagged(shard_of(team_id))}resp:{team_id}:{response_id}"
