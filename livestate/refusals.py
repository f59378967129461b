"""The refused-call counts' Redis scripts, shared by the gateway (which adds) and the workers
(which claim closed minutes for the Postgres roll-up). Names in livestate/keys.py; every name a
script touches is one of its KEYS, all under the `{refusals}` hash tag (one slot)."""

# A gateway's flush of one minute's counts (proxy/refusals.py), applied once per flush id.
# KEYS: the minute's bucket, the list of buckets, the flush mark.
# ARGV: the bucket's ttl (s), minute, the mark's ttl (s), then field, count, field, count...
FLUSH = """
if redis.call('SET', KEYS[3], 1, 'NX', 'EX', ARGV[3]) == false then
    return 0
end
for i = 4, #ARGV, 2 do
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
return 1
"""

# A worker's claim of a closed minute (billing/refusals.py): the bucket is renamed out of the
# gateways' way (a late flush starts a new bucket, listed again) and listed as claimed.
# KEYS: the minute's bucket, the list of buckets, the list of claimed buckets, the claimed name.
# ARGV: now (s). Returns 1 when claimed, 0 when the bucket was gone (another worker took it).
CLAIM = """
redis.call('ZREM', KEYS[2], KEYS[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
    return 0
end
redis.call('RENAME', KEYS[1], KEYS[4])
redis.call('ZADD', KEYS[3], ARGV[1], KEYS[4])
return 1
"""


def field(team: int, key: int, reason: str, model: str) -> str:
    """A bucket's field; the model goes last, so a '|' in it does not break the split."""
    return f"{team}|{key}|{reason}|{model}"


def parse_field(raw: str) -> tuple[int, int, str, str]:
    team, key, reason, model = raw.split("|", 3)
    return int(team), int(key), reason, model


ALL = {"REFUSALS_FLUSH": FLUSH, "REFUSALS_CLAIM": CLAIM}
