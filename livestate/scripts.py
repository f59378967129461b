"""Atomic Redis scripts: admission, settlement, and the settled-balance update.

Money invariant: a call is admitted only if its worst-case price fits in what the team may
spend (balance + overdraft - pending usage - outstanding reservations, and the period budget
in hard mode). Settlement releases the reservation and charges the actual price, capped at
what is still allowed, so the sum charged can never exceed what admission allowed, whatever
the concurrency. Each script runs atomically inside Redis: no check-then-act gap.

Cluster rule: every key a script touches is passed in KEYS, and all of one call's KEYS carry
one hash tag (the team's shard, livestate/keys.py). The Lua builds hash *fields* (a key's
fields in its team's account, a rate counter's minute), never key names; tests check both
(tests/test_redis_cluster.py reads the Lua for key arguments that are not KEYS[...]).

Units: all amounts are integer micro-credits; times are milliseconds since the epoch.

The scripts take positional KEYS and ARGV; the functions and `GatewayScripts` at the end are
the only code that spells their order, and take named arguments instead.
"""

from typing import NamedTuple

from redis.exceptions import NoScriptError

from livestate.keys import (
    SETTLER_GROUP,
    acct_key,
    dead_letters,
    inflight_key,
    job_key,
    open_jobs_key,
    parallel_key,
    retired_keys_key,
    shard_job_key,
    shard_of,
    usage_stream,
)
from livestate.snapshots import KeySnapshot, TeamSnapshot

# A parallel-request slot whose holder vanished (crash) is reclaimed after this long.
PARALLEL_STALE_MS = 15 * 60 * 1000
# A rate counter hash lives this long after the first call of a minute: the current and the
# previous minute are all the sliding window reads.
RATE_TTL_MS = 120_000
# SETTLE treats an account rebuilt less than this before a call's admission as rebuilt after it:
# the rebuild's clock is Redis's, the admission's the gateway's, which may be behind or ahead by
# this much. A SETTLE retried in that second after a rebuild is recorded twice (the ledger posts
# it once; only the key's live spend counts it twice until the next rebuild); a lost record
# would be worse.
REBUILT_SKEW_MS = 1_000

_RATE_HELPERS = """
local now = tonumber(ARGV[1])
local win = math.floor(now / 60000)
local keep = 1 - (now % 60000) / 60000
local rcur, rprev, tcur, tprev = 'r' .. win, 'r' .. (win - 1), 't' .. win, 't' .. (win - 1)
-- A scope's (key's or team's) counters: raw current minute, and the sliding window's use
-- (the previous minute counts in proportion to how much of it still overlaps).
local function window(hash)
  local v = redis.call('HMGET', hash, rcur, rprev, tcur, tprev)
  local r, t = tonumber(v[1] or '0'), tonumber(v[3] or '0')
  return {r = r, t = t, new = not v[1] and not v[3],
    rused = r + tonumber(v[2] or '0') * keep, tused = t + tonumber(v[4] or '0') * keep}
end
local function count(hash, w, reqs, tokens)
  if reqs == 0 and tokens == 0 then return end
  if reqs ~= 0 and tokens ~= 0 then
    redis.call('HSET', hash, rcur, w.r + reqs, tcur, w.t + tokens)
  elseif reqs ~= 0 then
    redis.call('HSET', hash, rcur, w.r + reqs)
  else
    redis.call('HSET', hash, tcur, w.t + tokens)
  end
  if w.new then
    -- First call of this minute: the minute before last is out of every window.
    redis.call('HDEL', hash, 'r' .. (win - 2), 't' .. (win - 2))
    redis.call('PEXPIRE', hash, __RATE_TTL__)
  end
end
"""

# The team's account hash holds its keys' accounts as fields (keys.key_fields): one HMGET reads
# everything a credit decision needs, one HSET writes it back.
_CREDIT_HELPERS = """
-- Would a reservation of `reserve` fit? Returns (refusal or nil, soft budget overrun 1/0, the
-- account {resv, kresv}).
local function credit_check(acct, kspent, kresv, reserve, overdraft, budget, hard, key_budget)
  local a = redis.call('HMGET', acct, 'ver', 'bal', 'pend', 'resv', 'pspend', kspent, kresv)
  if not a[1] then
    -- No settled balance published for this team (e.g. Redis was flushed): fail closed.
    return {'not_ready', 'account', 1, 0, 0}, 0, nil
  end
  local bal, pend, resv, pspend = tonumber(a[2]), tonumber(a[3] or '0'),
    tonumber(a[4] or '0'), tonumber(a[5] or '0')
  local ks, kr = tonumber(a[6] or '0'), tonumber(a[7] or '0')
  if bal - pend - resv + overdraft < reserve then
    return {'insufficient_quota', 'credits', 0, 0, 0}, 0, nil
  end
  local over = budget >= 0 and pspend + pend + resv + reserve > budget
  if over and hard then
    return {'budget_exceeded', 'team_budget', 0, budget,
      math.max(0, budget - pspend - pend - resv)}, 0, nil
  end
  if key_budget >= 0 and ks + kr + reserve > key_budget then
    return {'budget_exceeded', 'key_budget', 0, key_budget, 0}, 0, nil
  end
  return nil, over and 1 or 0, {resv = resv, kresv = kr}
end

local function reserve_in(acct, kresv, a, amount)
  if amount > 0 then
    redis.call('HSET', acct, 'resv', a.resv + amount, kresv, a.kresv + amount)
  end
end

-- Release `released` (if > 0) and charge up to `price`, capped at what may still be charged
-- to this account (and key) once it is released. Returns the amount charged.
local function release_and_charge(acct, kspent, kresv, released, price, overdraft, budget,
    hard, key_budget)
  local a = redis.call('HMGET', acct, 'bal', 'pend', 'resv', 'pspend', kspent, kresv)
  local bal, pend, resv, pspend = tonumber(a[1] or '0'), tonumber(a[2] or '0'),
    tonumber(a[3] or '0'), tonumber(a[4] or '0')
  local ks, kr = tonumber(a[5] or '0'), tonumber(a[6] or '0')
  resv, kr = resv - released, kr - released
  local room = bal - pend - resv + overdraft
  if budget >= 0 and hard then room = math.min(room, budget - pspend - pend - resv) end
  if key_budget >= 0 then room = math.min(room, key_budget - ks - kr) end
  local charge = 0
  if price > 0 then charge = math.max(0, math.min(price, room)) end
  if released > 0 or charge > 0 then
    redis.call('HSET', acct, 'pend', pend + charge, 'resv', resv, kspent, ks + charge, kresv, kr)
  end
  return charge
end
"""

# KEYS: 1 account hash, 2 parallel zset, 3 inflight hash, 4 key rate hash, 5 team rate hash,
#       6 job hash (any name of the shard when there is no job)
# ARGV: 1 now_ms, 2 request id, 3 est tokens, 4 reserve, 5 inflight record, 6 job id ('' = none),
#       7-11 the key's constants, 12-18 the team's (_KEY_ARGS, _TEAM_ARGS; limits: -1 = none)
# Returns {status, detail, retry_after_s, limit, remaining} for a refusal; admitted,
# {'ok', soft overrun 1/0, rpm limit, requests remaining, tpm limit, tokens remaining}: for each
# dimension the scope (key or team) with fewer remaining once this call is counted, -1 -1 when
# neither sets a limit (the headroom the gateway's x-ratelimit-* headers tell, Headroom below).
ADMIT = (
    _RATE_HELPERS
    + _CREDIT_HELPERS
    + """
local est = tonumber(ARGV[3])
local reserve = tonumber(ARGV[4])
if ARGV[6] ~= '' then
  local j = redis.call('HMGET', KEYS[6], 'team', 'status')
  -- Another team's job is answered exactly like one that does not exist.
  if j[1] ~= ARGV[18] then return {'job_not_found', 'job', 0, 0, 0} end
  if j[2] ~= 'open' then return {'job_closed', j[2], 0, 0, 0} end
end
local krpm, ktpm, trpm, ttpm = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[12]),
  tonumber(ARGV[13])
local kw, tw
-- The tighter scope of each dimension once this call is counted: limit, remaining (-1: none).
local rlim, rrem, tlim, trem = -1, -1, -1, -1
local function refuse(limit, used, detail)
  local retry = math.max(1, math.ceil((60000 - (now % 60000)) / 1000))
  return {'rate_limited', detail, retry, limit, math.max(0, math.floor(limit - used))}
end
if krpm >= 0 or ktpm >= 0 then
  kw = window(KEYS[4])
  if krpm >= 0 and kw.rused + 1 > krpm then return refuse(krpm, kw.rused, 'key_rpm') end
  if ktpm >= 0 and kw.tused + est > ktpm then return refuse(ktpm, kw.tused, 'key_tpm') end
  if krpm >= 0 then rlim, rrem = krpm, math.floor(krpm - kw.rused - 1) end
  if ktpm >= 0 then tlim, trem = ktpm, math.floor(ktpm - kw.tused - est) end
end
if trpm >= 0 or ttpm >= 0 then
  tw = window(KEYS[5])
  if trpm >= 0 and tw.rused + 1 > trpm then return refuse(trpm, tw.rused, 'team_rpm') end
  if ttpm >= 0 and tw.tused + est > ttpm then return refuse(ttpm, tw.tused, 'team_tpm') end
  if trpm >= 0 then
    local left = math.floor(trpm - tw.rused - 1)
    if rlim < 0 or left < rrem then rlim, rrem = trpm, left end
  end
  if ttpm >= 0 then
    local left = math.floor(ttpm - tw.tused - est)
    if tlim < 0 or left < trem then tlim, trem = ttpm, left end
  end
end

local par = tonumber(ARGV[14])
-- Slots of vanished holders are swept only when they could matter: at the limit.
if par >= 0 and redis.call('ZCARD', KEYS[2]) >= par then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - __STALE_MS__)
  if redis.call('ZCARD', KEYS[2]) >= par then
    return {'parallel_limited', 'team_parallel', 1, par, 0}
  end
end

local refused, soft_over, a = credit_check(KEYS[1], ARGV[10], ARGV[11], reserve,
  tonumber(ARGV[15]), tonumber(ARGV[16]), ARGV[17] == '1', tonumber(ARGV[9]))
if refused then return refused end

if kw then count(KEYS[4], kw, krpm >= 0 and 1 or 0, ktpm >= 0 and est or 0) end
if tw then count(KEYS[5], tw, trpm >= 0 and 1 or 0, ttpm >= 0 and est or 0) end
if par >= 0 then redis.call('ZADD', KEYS[2], now, ARGV[2]) end
reserve_in(KEYS[1], ARGV[11], a, reserve)
redis.call('HSET', KEYS[3], ARGV[2], ARGV[5])
return {'ok', soft_over, rlim, rrem, tlim, trem}
"""
)

# KEYS: 1 account hash, 2 parallel zset, 3 inflight hash, 4 usage stream, 5 key rate hash,
#       6 team rate hash, 7 job hash (any name of the shard when there is no job)
# ARGV: 1 now_ms, 2 request id, 3 reserve, 4 price, 5 token correction (actual - estimate),
#       6 usage record (JSON), 7 in a job (1/0), 8 the call failed upstream (1/0),
#       9 input tokens, 10 output tokens, 11 cost, 12 admitted at (ms),
#       13-17 the key's constants, 18-24 the team's (_KEY_ARGS, _TEAM_ARGS)
# Returns the amount charged (<= price); -1: recorded already (a retried SETTLE) or reaped;
# -2: Redis lost the team's account since admission (nothing written: keep and replay it).
SETTLE = (
    _CREDIT_HELPERS
    + """
local reserve = tonumber(ARGV[3])
-- Release the reservation only if it is still held: the reaper may have released it for a call
-- that outlived REAP_AFTER_MS, and a reservation must never be released twice.
local released = 0
if redis.call('HDEL', KEYS[3], ARGV[2]) == 1 then
  released = reserve
else
  -- Not in flight: this SETTLE ran before (a retry whose first reply was lost) or the call was
  -- reaped, so it records nothing again; unless Redis lost its data after the admission (the
  -- account is missing, or was rebuilt since): then the record is all there is.
  local a = redis.call('HMGET', KEYS[1], 'ver', 'rebuilt')
  if not a[1] then return -2 end
  if tonumber(a[2] or '0') < tonumber(ARGV[12]) - __SKEW_MS__ then return -1 end
end
local charge = release_and_charge(KEYS[1], ARGV[16], ARGV[17], released, tonumber(ARGV[4]),
  tonumber(ARGV[21]), tonumber(ARGV[22]), ARGV[23] == '1', tonumber(ARGV[15]))
if ARGV[7] == '1' and redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('HINCRBY', KEYS[7], 'calls', 1)
  if ARGV[8] == '1' then redis.call('HINCRBY', KEYS[7], 'failed', 1) end
  redis.call('HINCRBY', KEYS[7], 'in', ARGV[9])
  redis.call('HINCRBY', KEYS[7], 'out', ARGV[10])
  redis.call('HINCRBY', KEYS[7], 'cost', ARGV[11])
  redis.call('HINCRBY', KEYS[7], 'price', charge)
end
-- The token estimate admission counted, corrected in the minute it was counted in (while
-- that minute is still in the window).
if ARGV[5] ~= '0' then
  local admitted = math.floor(tonumber(ARGV[12]) / 60000)
  if admitted >= math.floor(tonumber(ARGV[1]) / 60000) - 1 then
    if ARGV[14] ~= '-1' then redis.call('HINCRBY', KEYS[5], 't' .. admitted, ARGV[5]) end
    if ARGV[19] ~= '-1' then redis.call('HINCRBY', KEYS[6], 't' .. admitted, ARGV[5]) end
  end
end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[4], '*', 'rec', ARGV[6], 'charged', charge)
return charge
""".replace("__SKEW_MS__", str(REBUILT_SKEW_MS))
)

# A usage record the gateway kept (proxy/recovery.py), appended again after Redis lost its data.
# Its charge counts as pending until the settler acknowledges it: added to `pend` here when the
# account exists, else counted by ACCOUNT_REBUILD from the stream. Posted once by request id, so
# a record the ledger already has costs nothing (ACK_SETTLED releases what this added).
# KEYS: 1 account hash, 2 the shard's usage stream.  ARGV: 1 usage record (JSON), 2 charged.
USAGE_REPLAY = """
if redis.call('HEXISTS', KEYS[1], 'ver') == 1 and tonumber(ARGV[2]) > 0 then
  redis.call('HINCRBY', KEYS[1], 'pend', ARGV[2])
end
redis.call('XADD', KEYS[2], '*', 'rec', ARGV[1], 'charged', ARGV[2], 'replayed', '1')
return 1
"""

# Open a job: reserve its flat price (per_job pricing) and record it.
# KEYS: 1 account hash, 2 job hash, 3 open-jobs zset, 4 usage stream
# ARGV: 1 now_ms, 2 job id, 3 fee, 4 overdraft, 5 team budget, 6 budget hard (1/0),
#       7 key budget, 8 team id, 9 key id, 10 job type, 11 metadata (JSON), 12 usage record,
#       13 key spent field, 14 key reserved field
# Returns {status, detail, retry_after_s, limit, remaining} like ADMIT.
JOB_OPEN = (
    _CREDIT_HELPERS
    + """
local fee = tonumber(ARGV[3])
if fee > 0 then
  local refused, _, a = credit_check(KEYS[1], ARGV[13], ARGV[14], fee, tonumber(ARGV[4]),
    tonumber(ARGV[5]), ARGV[6] == '1', tonumber(ARGV[7]))
  if refused then return refused end
  reserve_in(KEYS[1], ARGV[14], a, fee)
end
redis.call('HSET', KEYS[2], 'team', ARGV[8], 'key', ARGV[9], 'type', ARGV[10],
  'meta', ARGV[11], 'status', 'open', 'created', ARGV[1], 'fee', fee,
  'calls', 0, 'failed', 0, 'in', 0, 'out', 0, 'cost', 0, 'price', 0)
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[4], '*', 'rec', ARGV[12], 'charged', 0)
return {'ok', 0, 0, 0, 0}
"""
)

# Close a job: release its reservation and, for a flat-priced job that completed with no
# failed call, charge its price (capped at what the account still allows).
# KEYS: 1 job hash, 2 open-jobs zset, 3 usage stream, 4 the team's account hash
# ARGV: 1 now_ms, 2 job id, 3 status (completed/failed/cancelled/expired), 4 overdraft,
#       5 team budget, 6 budget hard (1/0), 7 key budget, 8 team id (the job must be its),
#       9 how long to keep the closed job in Redis (ms)
# Returns {'ok', charged} or {'not_found'} or {'closed', status}.
JOB_CLOSE = (
    _CREDIT_HELPERS
    + """
local j = redis.call('HMGET', KEYS[1], 'team', 'status', 'fee', 'calls', 'failed', 'key', 'cost',
  'price', 'in', 'out', 'type')
if not j[1] or j[1] ~= ARGV[8] then return {'not_found', ''} end
if j[2] ~= 'open' then return {'closed', j[2]} end
local kspent, kresv = 'k' .. j[6] .. ':s', 'k' .. j[6] .. ':r'
local fee, calls, failed = tonumber(j[3]), tonumber(j[4]), tonumber(j[5])
local status = ARGV[3]
-- An expired job is billed like a completed one if it did any work and nothing failed.
local due = 0
if fee > 0 and failed == 0 and (status == 'completed' or (status == 'expired' and calls > 0)) then
  due = fee
end
local charge = release_and_charge(KEYS[4], kspent, kresv, fee, due, tonumber(ARGV[4]),
  tonumber(ARGV[5]), ARGV[6] == '1', tonumber(ARGV[7]))
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
# KEYS: 1 inflight hash, 2 usage stream, 3 the call's team's account, 4 its parallel zset.
# ARGV: 1 request id, 2 usage record for the trail, 3 team id.
# Returns 1 if it released something, 0 if the call had settled meanwhile.
REAP = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local f = cjson.decode(raw)
if tostring(f.team) ~= ARGV[3] then return redis.error_reply('reap: not this team') end
redis.call('HDEL', KEYS[1], ARGV[1])
if f.reserve > 0 then
  redis.call('HINCRBY', KEYS[3], 'resv', 0 - f.reserve)
  redis.call('HINCRBY', KEYS[3], 'k' .. f.key .. ':r', 0 - f.reserve)
end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'rec', ARGV[2], 'charged', 0)
return 1
"""
# Calls older than this are taken as abandoned. Longer than any upstream read timeout; a call
# that still finishes later records nothing more (SETTLE finds it reaped).
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
        out[#out + 1] = {tostring(rec.team), tostring(rec.key), tonumber(f['charged'] or '0'),
          f['replayed'] == '1'}
      end
    end
  end
  return out
end
local function dead_letters(stream, limit, each)
  for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', limit)) do
    local f = {}
    for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
    local ok, rec = pcall(cjson.decode, f['rec'] or '')
    if ok and type(rec) == 'table' then each(rec, tonumber(f['charged'] or '0')) end
  end
end
-- The open jobs of the shard, from their hashes (KEYS[first], KEYS[first + 1], ... in the
-- order of ARGV[first_arg], ...). nil when the zset holds a job the caller did not declare
-- (opened since it looked): the caller looks again.
local function open_jobs(zset, first, first_arg)
  local declared = {}
  for i = first_arg, #ARGV do declared[ARGV[i]] = KEYS[first + i - first_arg] end
  local out = {}
  for _, job in ipairs(redis.call('ZRANGE', zset, 0, -1)) do
    local hash = declared[job]
    if not hash then return nil end
    out[#out + 1] = redis.call('HMGET', hash, 'team', 'key', 'fee', 'status')
  end
  return out
end
"""

# Build a team's account in Redis from Postgres: the settled balance and period spend, and each
# key's spend (settled in Postgres plus charged but not yet settled), in one atomic step. Until
# then admission fails closed for the team ('not_ready').
# The team's `pend` is its unsettled records' charges (released by the settler's ACK_SETTLED), so
# a rebuilt account admits nothing those records already spent; `rebuilt` (ms, Redis's clock)
# tells SETTLE that calls admitted before it lost their in-flight entries.
# KEYS: 1 account hash, 2 the shard's usage stream.
# ARGV: 1 balance, 2 period spend, 3 version, 4 settler group, 5 stream limit, 6 team id,
#       then (key id, settled spend) pairs.
# Returns 1 if it built the account, 0 if it was there already.
ACCOUNT_REBUILD = (
    _UNSETTLED
    + """
if redis.call('HEXISTS', KEYS[1], 'ver') == 1 then return 0 end
local charged, pend = {}, 0
for _, u in ipairs(unsettled(KEYS[2], ARGV[4], tonumber(ARGV[5])) or {}) do
  -- A replayed record may be in Postgres already (its key's settled spend): not counted twice.
  if not u[4] then charged[u[2]] = (charged[u[2]] or 0) + u[3] end
  if u[1] == ARGV[6] then pend = pend + u[3] end
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'bal', ARGV[1], 'pspend', ARGV[2], 'ver', ARGV[3], 'pend', pend,
  'rebuilt', t[1] * 1000 + math.floor(t[2] / 1000))
for i = 7, #ARGV, 2 do
  local spent = tonumber(ARGV[i + 1]) + (charged[ARGV[i]] or 0)
  redis.call('HSET', KEYS[1], 'k' .. ARGV[i] .. ':s', spent)
end
return 1
"""
)

# Recompute what the gateway holds beside the settled balance, for one shard, and repair drift:
#   pend (team) = charges of unsettled usage records;
#   resv (team and key) = reservations of calls in flight + flat prices of open jobs.
# KEYS: 1 usage stream, 2 inflight hash, 3 open-jobs zset, 4 dead-letter stream, then the
#       accounts of the teams below, then the hashes of the open jobs below.
# ARGV: 1 settler group, 2 stream limit, 3 number of teams, then per team: its id, its number
#       of keys and their ids; then the open job ids.
# Returns {'too_long', length}, {'retry'} (a job opened meanwhile), or a flat list of repairs:
# (kind, id, field, old, new)...
RECONCILE_LIVE = (
    _UNSETTLED
    + """
local n_teams = tonumber(ARGV[3])
local teams, arg = {}, 4
for t = 1, n_teams do
  local keys = {}
  for i = 1, tonumber(ARGV[arg + 1]) do keys[i] = ARGV[arg + 1 + i] end
  teams[t] = {id = ARGV[arg], acct = KEYS[4 + t], keys = keys}
  arg = arg + 2 + #keys
end
local jobs = open_jobs(KEYS[3], 5 + n_teams, arg)
if jobs == nil then return {'retry'} end
local records = unsettled(KEYS[1], ARGV[1], tonumber(ARGV[2]))
if records == nil then return {'too_long', redis.call('XLEN', KEYS[1])} end
local pend, resv, kresv = {}, {}, {}
for _, u in ipairs(records) do pend[u[1]] = (pend[u[1]] or 0) + u[3] end
-- Dead letters were never posted: their charge stays pending until a person deals with them.
dead_letters(KEYS[4], ARGV[2], function(rec, charged)
  if rec.team then
    local t = tostring(rec.team)
    pend[t] = (pend[t] or 0) + charged
  end
end)
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  local f = cjson.decode(flat[i + 1])
  local t, k = tostring(f.team), tostring(f.key)
  resv[t] = (resv[t] or 0) + f.reserve
  kresv[k] = (kresv[k] or 0) + f.reserve
end
for _, j in ipairs(jobs) do
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
for _, t in ipairs(teams) do
  if redis.call('HEXISTS', t.acct, 'ver') == 1 then
    fix('team', t.id, t.acct, 'pend', pend[t.id] or 0)
    fix('team', t.id, t.acct, 'resv', resv[t.id] or 0)
    for _, k in ipairs(t.keys) do fix('key', k, t.acct, 'k' .. k .. ':r', kresv[k] or 0) end
  end
end
return repairs
"""
)
# Reconciling a longer unsettled stream than this is skipped (and reported): the settler is
# behind, and a scan this long would block Redis.
RECONCILE_STREAM_LIMIT = 200_000


# Forget the key accounts (fields in their team's account) of a shard's retired keys (revoked
# or expired, past their grace) that nothing needs any more: no call in flight, no unsettled or
# dead-lettered usage record and no open job for the key. A key still busy, or queued since
# the caller looked, stays queued for the next round. Checked and deleted in one atomic step,
# so a settlement cannot land between the check and the delete.
# KEYS: 1 retired-keys zset, 2 usage stream, 3 inflight hash, 4 open-jobs zset, 5 dead letters,
#       then the accounts of the keys below, then the hashes of the open jobs below.
# ARGV: 1 settler group, 2 stream limit, 3 number of keys, then the key ids (KEYS[5 + i] is
#       key i's team's account), then the open job ids.
# Returns the ids dropped, {'retry'} (a job opened meanwhile) or {'too_long', length}.
KEY_ACCOUNTS_DROP = (
    _UNSETTLED
    + """
local n_keys = tonumber(ARGV[3])
local account = {}
for i = 1, n_keys do account[ARGV[3 + i]] = KEYS[5 + i] end
local queued = redis.call('ZRANGE', KEYS[1], 0, -1)
if #queued == 0 then return {} end
local jobs = open_jobs(KEYS[4], 6 + n_keys, 4 + n_keys)
if jobs == nil then return {'retry'} end
local records = unsettled(KEYS[2], ARGV[1], tonumber(ARGV[2]))
if records == nil then return {'too_long', redis.call('XLEN', KEYS[2])} end
local busy = {}
for _, u in ipairs(records) do busy[u[2]] = true end
dead_letters(KEYS[5], ARGV[2], function(rec)
  if rec.key then busy[tostring(rec.key)] = true end
end)
local flat = redis.call('HGETALL', KEYS[3])
for i = 2, #flat, 2 do busy[tostring(cjson.decode(flat[i]).key)] = true end
for _, j in ipairs(jobs) do
  if j[2] then busy[j[2]] = true end
end
local dropped = {}
for _, k in ipairs(queued) do
  if not busy[k] and account[k] then
    redis.call('HDEL', account[k], 'k' .. k .. ':s', 'k' .. k .. ':r')
    redis.call('ZREM', KEYS[1], k)
    dropped[#dropped + 1] = k
  end
end
return dropped
"""
)

# Settler acknowledgement, after the ledger entries are committed in Postgres.
# KEYS: 1 usage stream, then the accounts of the batch's teams.
# ARGV: 1 group, then (message id, KEYS index of its team's account, charged) triples.
# Acking and releasing `pend` happen together, so a redelivered record releases nothing twice.
ACK_SETTLED = """
local released = 0
for i = 2, #ARGV, 3 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    local charged = tonumber(ARGV[i + 2])
    if charged > 0 then
      redis.call('HINCRBY', KEYS[tonumber(ARGV[i + 1])], 'pend', 0 - charged)
    end
    released = released + 1
  end
end
return released
"""

ADMIT = ADMIT.replace("__STALE_MS__", str(PARALLEL_STALE_MS)).replace(
    "__RATE_TTL__", str(RATE_TTL_MS)
)

# Every script, by name: the cluster test checks each one's key discipline.
ALL = {
    "ADMIT": ADMIT,
    "SETTLE": SETTLE,
    "JOB_OPEN": JOB_OPEN,
    "JOB_CLOSE": JOB_CLOSE,
    "REAP": REAP,
    "ACCOUNT_SET": ACCOUNT_SET,
    "ACCOUNT_REBUILD": ACCOUNT_REBUILD,
    "RECONCILE_LIVE": RECONCILE_LIVE,
    "KEY_ACCOUNTS_DROP": KEY_ACCOUNTS_DROP,
    "ACK_SETTLED": ACK_SETTLED,
    "USAGE_REPLAY": USAGE_REPLAY,
}


def account_set(client, key: str, balance: int, period_spend: int, version: int) -> int:
    return client.eval(ACCOUNT_SET, 1, key, balance, period_spend, version)


def account_rebuild(
    client, *, team_id: int, balance: int, period_spend: int, version: int, key_spend: dict
) -> int:
    """ACCOUNT_REBUILD for one team; key_spend: key id -> settled spend (micro-credits)."""
    pairs = []
    for key_id, spent in key_spend.items():
        pairs += [key_id, spent]
    stream = usage_stream(shard_of(team_id))
    return client.eval(
        ACCOUNT_REBUILD,
        2,
        acct_key(team_id),
        stream,
        balance,
        period_spend,
        version,
        SETTLER_GROUP,
        RECONCILE_STREAM_LIMIT,
        team_id,
        *pairs,
    )


def _with_open_jobs(client, shard: int, run):
    """Run a script that declares the shard's open jobs, again if one opened meanwhile."""
    for _ in range(10):
        jobs = [j.decode() for j in client.zrange(open_jobs_key(shard), 0, -1)]
        result = run(jobs, [shard_job_key(shard, j) for j in jobs])
        if not (result and result[0] == b"retry"):
            return result
    raise RuntimeError(f"shard {shard}: jobs kept opening while reconciling")


def reconcile_live(client, shard: int, teams: dict[int, list[int]]) -> list:
    """RECONCILE_LIVE for one shard; teams: team id -> its live key ids."""

    def run(jobs, job_keys):
        args = [SETTLER_GROUP, RECONCILE_STREAM_LIMIT, len(teams)]
        for team_id, key_ids in teams.items():
            args += [team_id, len(key_ids), *key_ids]
        keys = [
            usage_stream(shard),
            inflight_key(shard),
            open_jobs_key(shard),
            dead_letters(shard),
            *(acct_key(t) for t in teams),
            *job_keys,
        ]
        return client.eval(RECONCILE_LIVE, len(keys), *keys, *args, *jobs)

    return _with_open_jobs(client, shard, run)


def key_accounts_drop(client, shard: int, key_teams: dict[int, int]) -> list:
    """KEY_ACCOUNTS_DROP for one shard; key_teams: queued key id -> its team id."""

    def run(jobs, job_keys):
        keys = [
            retired_keys_key(shard),
            usage_stream(shard),
            inflight_key(shard),
            open_jobs_key(shard),
            dead_letters(shard),
            *(acct_key(t) for t in key_teams.values()),
            *job_keys,
        ]
        args = [SETTLER_GROUP, RECONCILE_STREAM_LIMIT, len(key_teams), *key_teams]
        return client.eval(KEY_ACCOUNTS_DROP, len(keys), *keys, *args, *jobs)

    return _with_open_jobs(client, shard, run)


def reap(client, *, rid: str, team_id: int, record: bytes) -> int:
    """REAP one abandoned call of `team_id` (its in-flight record says which)."""
    shard = shard_of(team_id)
    keys = [inflight_key(shard), usage_stream(shard), acct_key(team_id), parallel_key(team_id)]
    return client.eval(REAP, len(keys), *keys, rid, record, team_id)


def ack_settled(client, shard: int, acks: list[tuple[bytes, int, int]]) -> int:
    """ACK_SETTLED: (message id, team id, charged) of records read from the shard's stream."""
    accounts: dict[int, int] = {}
    args: list = [SETTLER_GROUP]
    for msg_id, team_id, charged in acks:
        index = accounts.setdefault(team_id, len(accounts) + 2)
        args += [msg_id, index, charged]
    keys = [usage_stream(shard), *(acct_key(t) for t in accounts)]
    return client.eval(ACK_SETTLED, len(keys), *keys, *args)


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


class Headroom(NamedTuple):
    """What an admitted call leaves of its rate limits, from ADMIT's reply: for requests and
    for tokens per minute, the limit and the remaining of the scope (key or team) with fewer
    remaining, this call counted (its token estimate, as admission counts it). -1 -1: no
    limit on that dimension."""

    rpm: int
    requests_left: int
    tpm: int
    tokens_left: int


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
) -> tuple[list, list]:
    """JOB_CLOSE's (KEYS, ARGV) for one of `team`'s jobs."""
    return [job_key(team.id, job_id), team.open_jobs_key, team.usage_key, team.account_key], [
        now_ms,
        job_id,
        status,
        team.overdraft,
        team.budget_limit,
        _flag(team.hard),
        key_budget,
        team.id,
        retain_ms,
    ]


class GatewayScripts:
    """ADMIT, SETTLE, JOB_OPEN and JOB_CLOSE on the gateway's async client, called with named
    arguments. ADMIT and SETTLE, once per call each, take their constant arguments and keys
    encoded once in the snapshots (`script_args`, `admit_keys`, `settle_keys`), and go straight
    to EVALSHA: per call only the call's own values are encoded."""

    __slots__ = ("_admit", "_job_close", "_job_open", "_redis", "_replay", "_settle")

    def __init__(self, redis):
        self._redis = redis
        self._admit = redis.register_script(ADMIT)
        self._settle = redis.register_script(SETTLE)
        self._replay = redis.register_script(USAGE_REPLAY)
        self._job_open = redis.register_script(JOB_OPEN)
        self._job_close = redis.register_script(JOB_CLOSE)

    async def _evalsha(self, script, keys: tuple, args: tuple):
        try:
            return await self._redis.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:  # a restarted or flushed Redis: load it and run it once
            return await script(keys=keys, args=args)

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
    ) -> Refusal | Headroom | None:
        """Admit one call (rate limits, parallel slot, reservation): the headroom left of its
        rate limits (None: neither the key nor the team sets one), or why not."""
        job = job_key(team.id, job_id) if job_id else team.no_job_key
        verdict = await self._evalsha(
            self._admit,
            (*team.admit_keys, key.rate_key, team.rate_key, job),
            (
                now_ms,
                rid,
                est_tokens,
                reserve,
                inflight,
                job_id or "",
                *key.script_args,
                *team.script_args,
            ),
        )
        if verdict[0] != b"ok":
            return Refusal.of(verdict)
        if verdict[2] < 0 and verdict[4] < 0:
            return None
        return Headroom(verdict[2], verdict[3], verdict[4], verdict[5])

    async def settle(
        self,
        *,
        key: KeySnapshot,
        team: TeamSnapshot,
        rid: str,
        now_ms: int,
        admitted_ms: int,
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
        job = job_key(team.id, job_id) if job_id else team.no_job_key
        return await self._evalsha(
            self._settle,
            (*team.settle_keys, key.rate_key, team.rate_key, job),
            (
                now_ms,
                rid,
                reserve,
                price,
                token_correction,
                record,
                b"1" if job_id else b"0",
                b"1" if failed else b"0",
                in_tokens,
                out_tokens,
                cost,
                admitted_ms,
                *key.script_args,
                *team.script_args,
            ),
        )

    async def replay(
        self, *, account_key: str, usage_key: str, record: bytes, charged: int
    ) -> None:
        """Append a kept usage record again after Redis lost its data (see USAGE_REPLAY), to
        its team's account (TeamSnapshot.account_key) and shard stream (.usage_key)."""
        await self._replay(keys=[account_key, usage_key], args=[record, charged])

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
            keys=[team.account_key, job_key(team.id, job_id), team.open_jobs_key, team.usage_key],
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
                key.spent_field,
                key.reserved_field,
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
