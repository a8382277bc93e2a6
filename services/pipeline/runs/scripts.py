"""The Lua scripts of run transitions. Every transition checks what it depends on (a job's
state and fencing token, the run's state) and applies all of its writes or none; a worker that
lost its attempt (fenced) changes nothing. Timestamps in us go into JSON as strings: cjson
keeps only 14 significant digits of a number."""

from __future__ import annotations

# The coordinator's decision. KEYS: jobs, events, run, timers, attempts, work, queues, group,
# then the queue streams; ARGV[1]: the decision as JSON (see coordinator.apply).
APPLY = """
local op = cjson.decode(ARGV[1])
if op.run_state then
  local s = redis.call('HGET', KEYS[3], 'state')
  if s ~= op.run_state then return {'conflict', 'run'} end
end
for _, c in ipairs(op.cas) do
  local cur = redis.call('HGET', KEYS[1], c[1]) or ''
  if cur ~= c[2] then return {'conflict', c[1]} end
end
for _, c in ipairs(op.cas) do redis.call('HSET', KEYS[1], c[1], c[3]) end
for _, a in ipairs(op.attempts) do redis.call('HSET', KEYS[5], a[1], a[2]) end
for _, a in ipairs(op.ended) do
  local raw = redis.call('HGET', KEYS[5], a[1])
  if raw then
    local rec = cjson.decode(raw)
    if rec.state == 'QUEUED' then
      rec.state = a[2]; rec.reason = a[3]; rec.msg = a[4]; rec.et = a[5]
      redis.call('HSET', KEYS[5], a[1], cjson.encode(rec))
    end
  end
end
for k, v in pairs(op.run) do redis.call('HSET', KEYS[3], k, v) end
for _, e in ipairs(op.events) do redis.call('XADD', KEYS[2], '*', 'e', e) end
for _, t in ipairs(op.timers) do redis.call('ZADD', KEYS[4], 'LT', t[1], t[2]) end
for _, q in ipairs(op.queues) do
  if redis.call('SADD', KEYS[7], q[2]) == 1 then
    pcall(redis.call, 'XGROUP', 'CREATE', KEYS[8 + q[1]], 'workers', '0', 'MKSTREAM')
  end
end
for _, q in ipairs(op.dispatch) do
  redis.call('XADD', KEYS[8 + q[1]], '*', 'run', q[2], 'job', q[3], 'fence', q[4])
end
if op.release ~= '' then
  redis.call('LREM', KEYS[8], 0, op.release)
  local head = redis.call('LINDEX', KEYS[8], 0)
  if head then redis.call('XADD', KEYS[6], '*', 'run', head) end
end
return {'ok', ''}
"""

_JOB_CHECK = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'stale', ''} end
local job = cjson.decode(raw)
if tostring(job.f) ~= ARGV[2] or job.s ~= 'RUNNING' then return {'stale', job.s} end
local af = ARGV[1] .. '#' .. job.n
"""

# A worker starts the attempt it took from a queue. KEYS: jobs, attempts, events, lease.
# ARGV: key, fence, worker, now (us), lease (ms).
START = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'stale', ''} end
local job = cjson.decode(raw)
if tostring(job.f) ~= ARGV[2] or job.s ~= 'QUEUED' then return {'stale', job.s} end
job.s = 'RUNNING'
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(job))
local af = ARGV[1] .. '#' .. job.n
local a = cjson.decode(redis.call('HGET', KEYS[2], af))
a.state = 'RUNNING'; a.worker = ARGV[3]; a.st = ARGV[4]
redis.call('HSET', KEYS[2], af, cjson.encode(a))
redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[5])
redis.call('XADD', KEYS[3], '*', 'e', cjson.encode({k = ARGV[1], n = job.n, s = 'RUNNING', m = 'on ' .. ARGV[3]}))
return {'ok', tostring(job.n)}
"""

# A worker's heartbeat: renews the lease; answers whether the attempt is asked to stop.
# KEYS: jobs, lease. ARGV: key, fence, lease (ms).
HEARTBEAT = (
    _JOB_CHECK
    + """
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return {'ok', tostring(job.c)}
"""
)

# Log lines of the running attempt, masked already, kept up to the cap (then a marker once).
# KEYS: jobs, attempts, events, log-prefix (the log list is KEYS[4] .. af). ARGV: key, fence,
# cap (bytes), marker, lines...
APPEND_LOG = (
    _JOB_CHECK
    + """
if redis.call('HGET', KEYS[2], af .. '/trunc') == '1' then return {'truncated', ''} end
local cap = tonumber(ARGV[3])
local used = tonumber(redis.call('HGET', KEYS[2], af .. '/bytes') or '0')
local kept = {}
local cut = false
for i = 5, #ARGV do
  local size = #ARGV[i] + 1
  if used + size > cap then cut = true; break end
  used = used + size
  kept[#kept + 1] = ARGV[i]
end
if cut then
  kept[#kept + 1] = ARGV[4]
  redis.call('HSET', KEYS[2], af .. '/trunc', '1')
end
redis.call('HSET', KEYS[2], af .. '/bytes', used)
if #kept > 0 then
  redis.call('RPUSH', KEYS[4] .. af, unpack(kept))
  redis.call('XADD', KEYS[3], '*', 'k', ARGV[1], 'n', job.n, 'l', table.concat(kept, '\\n'))
end
if cut then return {'truncated', ''} end
return {'ok', ''}
"""
)

_END = """
job.s = ARGV[3]; job.rs = ARGV[4]; job.x = tonumber(ARGV[5]); job.r = ARGV[6]; job.d = 0; job.c = 0
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(job))
local a = cjson.decode(redis.call('HGET', KEYS[2], af))
a.state = ARGV[3]; a.reason = ARGV[4]; a.exit = tonumber(ARGV[5]); a.msg = ARGV[6]; a.et = ARGV[7]
if redis.call('HGET', KEYS[2], af .. '/trunc') == '1' then a.trunc = 1 end
redis.call('HSET', KEYS[2], af, cjson.encode(a))
redis.call('XADD', KEYS[3], '*', 'e', cjson.encode({k = ARGV[1], n = job.n, s = ARGV[3], m = ARGV[6]}))
redis.call('XADD', KEYS[4], '*', 'run', ARGV[8])
redis.call('DEL', KEYS[5])
"""

# A worker reports how its attempt ended. KEYS: jobs, attempts, events, work, lease.
# ARGV: key, fence, state, reason, exit, message, now (us), run id.
FINISH = _JOB_CHECK + _END + "\nreturn {'ok', ''}\n"

# The coordinator found a queue entry nobody acknowledged within a lease: the worker is lost
# unless its lease still stands. KEYS and ARGV as FINISH's (state FAILED, reason WORKER_LOST).
RECLAIM = (
    """
if redis.call('EXISTS', KEYS[5]) == 1 then return {'alive', ''} end
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'stale', ''} end
local job = cjson.decode(raw)
if tostring(job.f) ~= ARGV[2] then return {'stale', ''} end
if job.s == 'QUEUED' then return {'requeue', ''} end
if job.s ~= 'RUNNING' then return {'stale', ''} end
local af = ARGV[1] .. '#' .. job.n
"""
    + _END
    + "\nreturn {'lost', ''}\n"
)
