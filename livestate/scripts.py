"""Atomic Redis scripts: admission, settlement, and the settled-balance update.

Money invariant: a call is admitted only if its worst-case price fits in what the team may
spend (balance + overdraft - pending usage - outstanding reservations, and the period budget
in hard mode). Settlement releases the reservation and charges the actual price, capped at
what is still allowed, so the sum charged can never exceed what admission allowed, whatever
the concurrency. Each script runs atomically inside Redis: no check-then-act gap.

Units: all amounts are integer micro-credits; times are milliseconds since the epoch.

The scripts take positional KEYS and ARGV; `GatewayScripts` (at the end) is the only code that
spells their order for the gateway's four scripts, and takes named arguments instead.
"""

from typing import NamedTuple

from livestate.keys import (
    ACCOUNT_PREFIX,
    INFLIGHT,
    JOB_PREFIX,
    KEY_ACCOUNT_PREFIX,
    OPEN_JOBS,
    PARALLEL_PREFIX,
    USAGE_STREAM,
    job_key,
)
from livestate.snapshots import KeySnapshot, TeamSnapshot

# A parallel-request slot whose holder vanished (crash) is reclaimed after this long.
PARALLEL_STALE_MS = 15 * 60 * 1000

_RATE_HELPERS = """
local now = tonumber(ARGV[1])
local win = math.floor(now / 60000)
local frac = (now % 60000) / 60000
local function used(name)
  local cur = tonumber(redis.call('GET', name .. ':' .. win) or '0')
  local prev = tonumber(redis.call('GET', name .. ':' .. (win - 1)) or '0')
  -- Sliding window: the previous minute counts in proportion to how much of it still overlaps.
  return prev * (1 - frac) + cur
end
local function bump(name, by)
  if by ~= 0 then
    local k = name .. ':' .. win
    redis.call('INCRBY', k, by)
    redis.call('PEXPIRE', k, 120000)
  end
end
"""

_CREDIT_HELPERS = """
-- Would a reservation of `reserve` fit? Returns (refusal or nil, soft budget overrun 1/0).
local function credit_check(acct, kacct, reserve, overdraft, budget, hard, key_budget)
  local a = redis.call('HMGET', acct, 'ver', 'bal', 'pend', 'resv', 'pspend')
  if not a[1] then
    -- No settled balance published for this team (e.g. Redis was flushed): fail closed.
    return {'not_ready', 'account', 1, 0, 0}, 0
  end
  local bal, pend, resv, pspend = tonumber(a[2]), tonumber(a[3] or '0'),
    tonumber(a[4] or '0'), tonumber(a[5] or '0')
  if bal - pend - resv + overdraft < reserve then
    return {'insufficient_quota', 'credits', 0, 0, 0}, 0
  end
  local over = budget >= 0 and pspend + pend + resv + reserve > budget
  if over and hard then
    return {'budget_exceeded', 'team_budget', 0, budget,
      math.max(0, budget - pspend - pend - resv)}, 0
  end
  if key_budget >= 0 then
    local k = redis.call('HMGET', kacct, 'spent', 'resv')
    if tonumber(k[1] or '0') + tonumber(k[2] or '0') + reserve > key_budget then
      return {'budget_exceeded', 'key_budget', 0, key_budget, 0}, 0
    end
  end
  return nil, over and 1 or 0
end

-- What may still be charged to this account (and key) right now.
local function room_for(acct, kacct, overdraft, budget, hard, key_budget)
  local a = redis.call('HMGET', acct, 'bal', 'pend', 'resv', 'pspend')
  local bal, pend, resv, pspend = tonumber(a[1] or '0'), tonumber(a[2] or '0'),
    tonumber(a[3] or '0'), tonumber(a[4] or '0')
  local room = bal - pend - resv + overdraft
  if budget >= 0 and hard then room = math.min(room, budget - pspend - pend - resv) end
  if key_budget >= 0 then
    local k = redis.call('HMGET', kacct, 'spent', 'resv')
    room = math.min(room, key_budget - tonumber(k[1] or '0') - tonumber(k[2] or '0'))
  end
  return room
end

local function release(acct, kacct, amount)
  -- (0 - x, never -x: Lua's -0 reaches Redis as "-0", which HINCRBY rejects)
  if amount > 0 then
    redis.call('HINCRBY', acct, 'resv', 0 - amount)
    redis.call('HINCRBY', kacct, 'resv', 0 - amount)
  end
end

local function charge_to(acct, kacct, amount)
  if amount > 0 then
    redis.call('HINCRBY', acct, 'pend', amount)
    redis.call('HINCRBY', kacct, 'spent', amount)
  end
end
"""

# KEYS: 1 account hash, 2 key-account hash, 3 parallel zset, 4 inflight hash,
#       5 key rpm, 6 key tpm, 7 team rpm, 8 team tpm   (rate names; window suffix added here),
#       9 job hash (any name when there is no job)
# ARGV: 1 now_ms, 2 request id, 3 est tokens, 4 reserve,
#       5 key rpm limit, 6 key tpm limit, 7 team rpm limit, 8 team tpm limit, 9 team parallel,
#       10 overdraft, 11 team budget, 12 budget hard (1/0), 13 key budget, 14 inflight record,
#       15 job id ('' = none), 16 team id   (limits: -1 = none)
# Returns {status, detail, retry_after_s, limit, remaining}
ADMIT = (
    _RATE_HELPERS
    + _CREDIT_HELPERS
    + """
local est = tonumber(ARGV[3])
local reserve = tonumber(ARGV[4])
if ARGV[15] ~= '' then
  local j = redis.call('HMGET', KEYS[9], 'team', 'status')
  -- Another team's job is answered exactly like one that does not exist.
  if j[1] ~= ARGV[16] then return {'job_not_found', 'job', 0, 0, 0} end
  if j[2] ~= 'open' then return {'job_closed', j[2], 0, 0, 0} end
end
local checks = {
  {KEYS[5], tonumber(ARGV[5]), 1, 'key_rpm'},
  {KEYS[6], tonumber(ARGV[6]), est, 'key_tpm'},
  {KEYS[7], tonumber(ARGV[7]), 1, 'team_rpm'},
  {KEYS[8], tonumber(ARGV[8]), est, 'team_tpm'},
}
local rpm_remaining = -1
for _, c in ipairs(checks) do
  if c[2] >= 0 then
    local u = used(c[1])
    if u + c[3] > c[2] then
      local retry = math.max(1, math.ceil((60000 - (now % 60000)) / 1000))
      return {'rate_limited', c[4], retry, c[2], math.max(0, math.floor(c[2] - u))}
    end
    if c[4] == 'key_rpm' or (c[4] == 'team_rpm' and rpm_remaining < 0) then
      rpm_remaining = math.floor(c[2] - u - 1)
    end
  end
end

local par = tonumber(ARGV[9])
if par >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - __STALE_MS__)
  if redis.call('ZCARD', KEYS[3]) >= par then
    return {'parallel_limited', 'team_parallel', 1, par, 0}
  end
end

local refused, soft_over = credit_check(KEYS[1], KEYS[2], reserve, tonumber(ARGV[10]),
  tonumber(ARGV[11]), ARGV[12] == '1', tonumber(ARGV[13]))
if refused then return refused end

bump(KEYS[5], ARGV[5] ~= '-1' and 1 or 0)
bump(KEYS[6], ARGV[6] ~= '-1' and est or 0)
bump(KEYS[7], ARGV[7] ~= '-1' and 1 or 0)
bump(KEYS[8], ARGV[8] ~= '-1' and est or 0)
if par >= 0 then redis.call('ZADD', KEYS[3], now, ARGV[2]) end
if reserve > 0 then
  redis.call('HINCRBY', KEYS[1], 'resv', reserve)
  redis.call('HINCRBY', KEYS[2], 'resv', reserve)
end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[14])
return {'ok', soft_over, 0, 0, rpm_remaining}
""".replace("__STALE_MS__", str(PARALLEL_STALE_MS))
)

# KEYS: 1 account hash, 2 key-account hash, 3 parallel zset, 4 inflight hash, 5 usage stream,
#       6 key tpm, 7 team tpm, 8 job hash (any name when there is no job)
# ARGV: 1 now_ms, 2 request id, 3 reserve, 4 price, 5 token correction (actual - estimate),
#       6 overdraft, 7 team budget, 8 budget hard (1/0), 9 key budget, 10 usage record (JSON),
#       11 in a job (1/0), 12 the call failed upstream (1/0), 13 input tokens,
#       14 output tokens, 15 cost
# Returns the amount charged (<= price).
SETTLE = (
    _RATE_HELPERS
    + _CREDIT_HELPERS
    + """
local reserve = tonumber(ARGV[3])
local price = tonumber(ARGV[4])
-- Release the reservation only if it is still held: the reaper may have released it for a call
-- that outlived REAP_AFTER_MS, and a reservation must never be released twice.
if redis.call('HDEL', KEYS[4], ARGV[2]) == 1 then release(KEYS[1], KEYS[2], reserve) end
local room = room_for(KEYS[1], KEYS[2], tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8] == '1',
  tonumber(ARGV[9]))
local charge = math.max(0, math.min(price, room))
charge_to(KEYS[1], KEYS[2], charge)
if ARGV[11] == '1' and redis.call('EXISTS', KEYS[8]) == 1 then
  redis.call('HINCRBY', KEYS[8], 'calls', 1)
  if ARGV[12] == '1' then redis.call('HINCRBY', KEYS[8], 'failed', 1) end
  redis.call('HINCRBY', KEYS[8], 'in', ARGV[13])
  redis.call('HINCRBY', KEYS[8], 'out', ARGV[14])
  redis.call('HINCRBY', KEYS[8], 'cost', ARGV[15])
  redis.call('HINCRBY', KEYS[8], 'price', charge)
end
local delta = tonumber(ARGV[5])
if delta ~= 0 then
  if redis.call('EXISTS', KEYS[6] .. ':' .. win) == 1 then bump(KEYS[6], delta) end
  if redis.call('EXISTS', KEYS[7] .. ':' .. win) == 1 then bump(KEYS[7], delta) end
end
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('XADD', KEYS[5], '*', 'rec', ARGV[10], 'charged', charge)
return charge
"""
)

# Open a job: reserve its flat price (per_job pricing) and record it.
# KEYS: 1 account hash, 2 key-account hash, 3 job hash, 4 open-jobs zset, 5 usage stream
# ARGV: 1 now_ms, 2 job id, 3 fee, 4 overdraft, 5 team budget, 6 budget hard (1/0),
#       7 key budget, 8 team id, 9 key id, 10 job type, 11 metadata (JSON), 12 usage record
# Returns {status, detail, retry_after_s, limit, remaining} like ADMIT.
JOB_OPEN = (
    _CREDIT_HELPERS
    + """
local fee = tonumber(ARGV[3])
if fee > 0 then
  local refused = credit_check(KEYS[1], KEYS[2], fee, tonumber(ARGV[4]), tonumber(ARGV[5]),
    ARGV[6] == '1', tonumber(ARGV[7]))
  if refused then return refused end
  redis.call('HINCRBY', KEYS[1], 'resv', fee)
  redis.call('HINCRBY', KEYS[2], 'resv', fee)
end
redis.call('HSET', KEYS[3], 'team', ARGV[8], 'key', ARGV[9], 'type', ARGV[10],
  'meta', ARGV[11], 'status', 'open', 'created', ARGV[1], 'fee', fee,
  'calls', 0, 'failed', 0, 'in', 0, 'out', 0, 'cost', 0, 'price', 0)
redis.call('ZADD', KEYS[4], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[5], '*', 'rec', ARGV[12], 'charged', 0)
return {'ok', 0, 0, 0, 0}
"""
)

# Close a job: release its reservation and, for a flat-priced job that completed with no
# failed call, charge its price (capped at what the account still allows).
# KEYS: 1 job hash, 2 open-jobs zset, 3 usage stream
# ARGV: 1 now_ms, 2 job id, 3 status (completed/failed/cancelled/expired), 4 overdraft,
#       5 team budget, 6 budget hard (1/0), 7 key budget, 8 team id ('' = any: the expiry task),
#       9 how long to keep the closed job in Redis (ms)
# Returns {'ok', charged} or {'not_found'} or {'closed', status}.
JOB_CLOSE = (
    _CREDIT_HELPERS
    + """
local j = redis.call('HMGET', KEYS[1], 'team', 'status', 'fee', 'calls', 'failed', 'key', 'cost',
  'price', 'in', 'out', 'type')
if not j[1] or (ARGV[8] ~= '' and j[1] ~= ARGV[8]) then return {'not_found', ''} end
if j[2] ~= 'open' then return {'closed', j[2]} end
local acct, kacct = __ACCT__ .. j[1], __KACCT__ .. j[6]
local fee, calls, failed = tonumber(j[3]), tonumber(j[4]), tonumber(j[5])
release(acct, kacct, fee)
local status = ARGV[3]
local charge = 0
-- An expired job is billed like a completed one if it did any work and nothing failed.
if fee > 0 and failed == 0 and (status == 'completed' or (status == 'expired' and calls > 0)) then
  local room = room_for(acct, kacct, tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1',
    tonumber(ARGV[7]))
  charge = math.max(0, math.min(fee, room))
  charge_to(acct, kacct, charge)
end
redis.call('HSET', KEYS[1], 'status', status, 'closed', ARGV[1], 'charged', charge)
redis.call('PEXPIRE', KEYS[1], ARGV[9])
redis.call('ZREM', KEYS[2], ARGV[2])
local record = cjson.encode({kind = 'job_close', job = ARGV[2], team = tonumber(j[1]),
  key = tonumber(j[6]), status = status, fee = fee, cost = tonumber(j[7]),
  calls = calls, failed = failed, ts = tonumber(ARGV[1]) / 1000})
redis.call('XADD', KEYS[3], '*', 'rec', record, 'charged', charge)
return {'ok', charge}
"""
)


# Release the reservation of a call whose gateway vanished (crash, kill -9) without settling.
# KEYS: 1 inflight hash, 2 usage stream.  ARGV: 1 request id, 2 usage record for the trail.
# Returns 1 if it released something, 0 if the call had settled meanwhile.
REAP = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local f = cjson.decode(raw)
redis.call('HDEL', KEYS[1], ARGV[1])
if f.reserve > 0 then
  redis.call('HINCRBY', __ACCT__ .. f.team, 'resv', 0 - f.reserve)
  redis.call('HINCRBY', __KACCT__ .. f.key, 'resv', 0 - f.reserve)
end
redis.call('ZREM', __PAR__ .. f.team, ARGV[1])
redis.call('XADD', KEYS[2], '*', 'rec', ARGV[2], 'charged', 0)
return 1
"""
# Calls older than this are taken as abandoned. Longer than any upstream read timeout; a call
# that still finishes later is charged normally (capped at what its account allows).
REAP_AFTER_MS = 60 * 60 * 1000

# KEYS: 1 account hash.  ARGV: 1 balance, 2 period spend, 3 version.
# Returns 1 (moved forward), 0 (Redis already had this or a newer version), or -1: no account in
# Redis (a new team, or Redis was flushed), which must be built with ACCOUNT_REBUILD instead, so
# that its keys' spend is rebuilt in the same step.
ACCOUNT_SET = """
local cur = redis.call('HGET', KEYS[1], 'ver')
if not cur then return -1 end
if tonumber(ARGV[3]) > tonumber(cur) then
  redis.call('HSET', KEYS[1], 'bal', ARGV[1], 'pspend', ARGV[2], 'ver', ARGV[3])
  return 1
end
return 0
"""

# The usage stream's records that no settler has acknowledged yet: newer than the group's
# last-delivered id, or delivered and still pending. Returns nil when the stream is longer
# than `limit` (a settler backlog: reconciling it entry by entry would block Redis).
_UNSETTLED = """
local function id_after(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
local function unsettled(stream, group, limit)
  local len = redis.call('XLEN', stream)
  if len > limit then return nil end
  if len == 0 then return {} end
  local last, pending = '0-0', {}
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
  if ok then
    for _, g in ipairs(groups) do
      local info = {}
      for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
      if info['name'] == group then
        last = info['last-delivered-id']
        for _, p in ipairs(redis.call('XPENDING', stream, group, '-', '+', len)) do
          pending[p[1]] = true
        end
      end
    end
  end
  local out = {}
  for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+')) do
    if pending[entry[1]] or id_after(entry[1], last) then
      local f = {}
      for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
      if f['rec'] then
        local rec = cjson.decode(f['rec'])
        out[#out + 1] = {tostring(rec.team), tostring(rec.key), tonumber(f['charged'] or '0')}
      end
    end
  end
  return out
end
"""

# Build a team's account in Redis from Postgres: the settled balance and period spend, and each
# key's spend (settled in Postgres plus charged but not yet settled), in one atomic step. Until
# then admission fails closed for the team ('not_ready').
# KEYS: 1 account hash, 2 usage stream.
# ARGV: 1 balance, 2 period spend, 3 version, 4 settler group, 5 stream limit,
#       then (key id, settled spend) pairs.
# Returns 1 if it built the account, 0 if it was there already.
ACCOUNT_REBUILD = (
    _UNSETTLED
    + """
if redis.call('HEXISTS', KEYS[1], 'ver') == 1 then return 0 end
local charged = {}
for _, u in ipairs(unsettled(KEYS[2], ARGV[4], tonumber(ARGV[5])) or {}) do
  charged[u[2]] = (charged[u[2]] or 0) + u[3]
end
redis.call('HSET', KEYS[1], 'bal', ARGV[1], 'pspend', ARGV[2], 'ver', ARGV[3])
for i = 6, #ARGV, 2 do
  local spent = tonumber(ARGV[i + 1]) + (charged[ARGV[i]] or 0)
  redis.call('HSET', __KACCT__ .. ARGV[i], 'spent', spent)
end
return 1
"""
)

# Recompute what the gateway holds beside the settled balance, and repair drift:
#   pend (team) = charges of unsettled usage records;
#   resv (team and key) = reservations of calls in flight + flat prices of open jobs.
# KEYS: 1 usage stream, 2 inflight hash, 3 open-jobs zset, 4 dead-letter stream.
# ARGV: 1 settler group, 2 stream limit, 3 number of team ids, then team ids, then key ids.
# Returns {'too_long', length} or a flat list of repairs: (kind, id, field, old, new)...
RECONCILE_LIVE = (
    _UNSETTLED
    + """
local records = unsettled(KEYS[1], ARGV[1], tonumber(ARGV[2]))
if records == nil then return {'too_long', redis.call('XLEN', KEYS[1])} end
local pend, resv, kresv = {}, {}, {}
for _, u in ipairs(records) do pend[u[1]] = (pend[u[1]] or 0) + u[3] end
-- Dead letters were never posted: their charge stays pending until a person deals with them.
for _, entry in ipairs(redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', ARGV[2])) do
  local f = {}
  for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
  local ok, rec = pcall(cjson.decode, f['rec'] or '')
  if ok and type(rec) == 'table' and rec.team then
    local t = tostring(rec.team)
    pend[t] = (pend[t] or 0) + tonumber(f['charged'] or '0')
  end
end
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  local f = cjson.decode(flat[i + 1])
  local t, k = tostring(f.team), tostring(f.key)
  resv[t] = (resv[t] or 0) + f.reserve
  kresv[k] = (kresv[k] or 0) + f.reserve
end
for _, job in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  local j = redis.call('HMGET', __JOB__ .. job, 'team', 'key', 'fee', 'status')
  if j[4] == 'open' and tonumber(j[3] or '0') > 0 then
    resv[j[1]] = (resv[j[1]] or 0) + tonumber(j[3])
    kresv[j[2]] = (kresv[j[2]] or 0) + tonumber(j[3])
  end
end
local repairs = {}
local function fix(kind, id, hash, field, want)
  local cur = tonumber(redis.call('HGET', hash, field) or '0')
  if cur ~= want then
    redis.call('HSET', hash, field, want)
    for _, v in ipairs({kind, id, field, cur, want}) do repairs[#repairs + 1] = v end
  end
end
local n_teams = tonumber(ARGV[3])
for i = 4, 3 + n_teams do
  local t = ARGV[i]
  local acct = __ACCT__ .. t
  if redis.call('HEXISTS', acct, 'ver') == 1 then
    fix('team', t, acct, 'pend', pend[t] or 0)
    fix('team', t, acct, 'resv', resv[t] or 0)
  end
end
for i = 4 + n_teams, #ARGV do
  local k = ARGV[i]
  local kacct = __KACCT__ .. k
  if (kresv[k] or 0) > 0 or redis.call('HEXISTS', kacct, 'resv') == 1 then
    fix('key', k, kacct, 'resv', kresv[k] or 0)
  end
end
return repairs
"""
)
# Reconciling a longer unsettled stream than this is skipped (and reported): the settler is
# behind, and a scan this long would block Redis.
RECONCILE_STREAM_LIMIT = 200_000


# Forget the key accounts of retired keys (revoked or expired, past their grace) that nothing
# needs any more: no call in flight, no unsettled or dead-lettered usage record and no open job
# for the key. A key still busy stays queued for the next round. Checked and deleted in one
# atomic step, so a settlement cannot land between the check and the delete.
# KEYS: 1 retired-keys zset, 2 usage stream, 3 inflight hash, 4 open-jobs zset, 5 dead letters.
# ARGV: 1 settler group, 2 stream limit.
# Returns the ids dropped, or {'too_long', length} (a settler backlog: nothing is dropped).
KEY_ACCOUNTS_DROP = (
    _UNSETTLED
    + """
local queued = redis.call('ZRANGE', KEYS[1], 0, -1)
if #queued == 0 then return {} end
local records = unsettled(KEYS[2], ARGV[1], tonumber(ARGV[2]))
if records == nil then return {'too_long', redis.call('XLEN', KEYS[2])} end
local busy = {}
for _, u in ipairs(records) do busy[u[2]] = true end
for _, entry in ipairs(redis.call('XRANGE', KEYS[5], '-', '+', 'COUNT', ARGV[2])) do
  local f = {}
  for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
  local ok, rec = pcall(cjson.decode, f['rec'] or '')
  if ok and type(rec) == 'table' and rec.key then busy[tostring(rec.key)] = true end
end
local flat = redis.call('HGETALL', KEYS[3])
for i = 2, #flat, 2 do busy[tostring(cjson.decode(flat[i]).key)] = true end
for _, job in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  local k = redis.call('HGET', __JOB__ .. job, 'key')
  if k then busy[k] = true end
end
local dropped = {}
for _, k in ipairs(queued) do
  if not busy[k] then
    redis.call('DEL', __KACCT__ .. k)
    redis.call('ZREM', KEYS[1], k)
    dropped[#dropped + 1] = k
  end
end
return dropped
"""
)

# Settler acknowledgement, after the ledger entries are committed in Postgres.
# KEYS: 1 usage stream.  ARGV: 1 group, then (message id, account key, charged) triples.
# Acking and releasing `pend` happen together, so a redelivered record releases nothing twice.
ACK_SETTLED = """
local released = 0
for i = 2, #ARGV, 3 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    local charged = tonumber(ARGV[i + 2])
    if charged > 0 then redis.call('HINCRBY', ARGV[i + 1], 'pend', 0 - charged) end
    released = released + 1
  end
end
return released
"""


def account_set(client, key: str, balance: int, period_spend: int, version: int) -> int:
    return client.eval(ACCOUNT_SET, 1, key, balance, period_spend, version)


def _names(script: str) -> str:
    """Put livestate.keys' prefixes into a script's text: Lua spells no gateway name itself."""
    for marker, prefix in (
        ("__ACCT__", ACCOUNT_PREFIX),
        ("__KACCT__", KEY_ACCOUNT_PREFIX),
        ("__PAR__", PARALLEL_PREFIX),
        ("__JOB__", JOB_PREFIX),
    ):
        script = script.replace(marker, f"'{prefix}'")
    return script


JOB_CLOSE, REAP, ACCOUNT_REBUILD, RECONCILE_LIVE, KEY_ACCOUNTS_DROP = (
    _names(s) for s in (JOB_CLOSE, REAP, ACCOUNT_REBUILD, RECONCILE_LIVE, KEY_ACCOUNTS_DROP)
)


class Refusal(NamedTuple):
    """A call or job the admission scripts did not admit: {status, detail, retry_after_s,
    limit, remaining}, decoded."""

    status: str
    detail: str
    retry: int
    limit: int
    remaining: int

    @classmethod
    def of(cls, verdict: list) -> "Refusal":
        status, detail = verdict[0].decode(), _text(verdict[1])
        return cls(status, detail, int(verdict[2]), int(verdict[3]), int(verdict[4]))


class JobCloseResult(NamedTuple):
    status: str  # "ok", "not_found" or "closed"
    detail: str  # the amount charged ("ok") or the status the job already had ("closed")


def _flag(value: bool) -> str:
    return "1" if value else "0"


def job_close_call(
    *,
    job_id: str,
    status: str,
    now_ms: int,
    team: TeamSnapshot,
    key_budget: int,
    retain_ms: int,
    team_only: bool = True,
) -> tuple[list, list]:
    """JOB_CLOSE's (KEYS, ARGV). With team_only=False any team's job closes (the expiry task)."""
    return [job_key(job_id), OPEN_JOBS, USAGE_STREAM], [
        now_ms,
        job_id,
        status,
        team.overdraft,
        team.budget_limit,
        _flag(team.hard),
        key_budget,
        team.id if team_only else "",
        retain_ms,
    ]


class GatewayScripts:
    """ADMIT, SETTLE, JOB_OPEN and JOB_CLOSE registered on the gateway's async client, called
    with named arguments. Per call this builds two short lists from fields the snapshots
    computed once; nothing else is allocated."""

    __slots__ = ("_admit", "_job_close", "_job_open", "_settle")

    def __init__(self, redis):
        self._admit = redis.register_script(ADMIT)
        self._settle = redis.register_script(SETTLE)
        self._job_open = redis.register_script(JOB_OPEN)
        self._job_close = redis.register_script(JOB_CLOSE)

    async def admit(
        self,
        *,
        key: KeySnapshot,
        team: TeamSnapshot,
        rid: str,
        now_ms: int,
        est_tokens: int,
        reserve: int,
        inflight: bytes,
        job_id: str | None,
    ) -> Refusal | None:
        """Admit one call (rate limits, parallel slot, reservation): None, or why not."""
        verdict = await self._admit(
            keys=[
                team.account_key,
                key.account_key,
                team.parallel_key,
                INFLIGHT,
                key.rpm_key,
                key.tpm_key,
                team.rpm_key,
                team.tpm_key,
                job_key(job_id or ""),
            ],
            args=[
                now_ms,
                rid,
                est_tokens,
                reserve,
                key.rpm_limit,
                key.tpm_limit,
                team.rpm_limit,
                team.tpm_limit,
                team.par_limit,
                team.overdraft,
                team.budget_limit,
                _flag(team.hard),
                key.budget_limit,
                inflight,
                job_id or "",
                team.id,
            ],
        )
        return None if verdict[0] == b"ok" else Refusal.of(verdict)

    async def settle(
        self,
        *,
        key: KeySnapshot,
        team: TeamSnapshot,
        rid: str,
        now_ms: int,
        reserve: int,
        price: int,
        token_correction: int,
        record: bytes,
        job_id: str | None,
        failed: bool,
        in_tokens: int,
        out_tokens: int,
        cost: int,
    ) -> int:
        """Release the call's reservation, charge its price (capped) and append its record."""
        return await self._settle(
            keys=[
                team.account_key,
                key.account_key,
                team.parallel_key,
                INFLIGHT,
                USAGE_STREAM,
                key.tpm_key,
                team.tpm_key,
                job_key(job_id or ""),
            ],
            args=[
                now_ms,
                rid,
                reserve,
                price,
                token_correction,
                team.overdraft,
                team.budget_limit,
                _flag(team.hard),
                key.budget_limit,
                record,
                _flag(bool(job_id)),
                _flag(failed),
                in_tokens,
                out_tokens,
                cost,
            ],
        )

    async def job_open(
        self,
        *,
        key: KeySnapshot,
        team: TeamSnapshot,
        now_ms: int,
        job_id: str,
        job_type: str,
        fee: int,
        metadata: bytes,
        record: bytes,
    ) -> Refusal | None:
        """Open a job, reserving its fee: None, or why not."""
        verdict = await self._job_open(
            keys=[team.account_key, key.account_key, job_key(job_id), OPEN_JOBS, USAGE_STREAM],
            args=[
                now_ms,
                job_id,
                fee,
                team.overdraft,
                team.budget_limit,
                _flag(team.hard),
                key.budget_limit,
                team.id,
                key.id,
                job_type,
                metadata,
                record,
            ],
        )
        return None if verdict[0] == b"ok" else Refusal.of(verdict)

    async def job_close(
        self,
        *,
        key: KeySnapshot,
        team: TeamSnapshot,
        now_ms: int,
        job_id: str,
        status: str,
        retain_ms: int,
    ) -> JobCloseResult:
        """Close one of the team's jobs, charging its fee when it is due."""
        keys, args = job_close_call(
            job_id=job_id,
            status=status,
            now_ms=now_ms,
            team=team,
            key_budget=key.budget_limit,
            retain_ms=retain_ms,
        )
        result = await self._job_close(keys=keys, args=args)
        return JobCloseResult(result[0].decode(), _text(result[1]))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
