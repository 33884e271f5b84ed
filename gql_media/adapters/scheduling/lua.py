"""The scheduler's Redis scripts (Lua, run atomically by Redis). ``scheduler.py`` explains
the model; here is only how it is kept.

Keys, under the scheduler's prefix ``<namespace>:sched:``:

- ``where`` hash: job id -> ``[priority, version, owner, group]`` (JSON) for each job that
  waits (due or not); ``later`` zset: job id -> the time (ms) it becomes due, for the jobs
  that are not due yet.
- ``q:<p>:<owner>\\t<group>`` zset: a group's due jobs at priority p, first come first.
- ``g:<p>:<owner>`` zset: the ring of an owner's groups at p; ``o:<p>``: the ring of owners
  at p; ``prios``: the priorities whose owner ring is not empty. A ring's scores are turns
  (one counter, ``turn``): the lowest goes next and a member served goes to the back.
  A ring holds only members that may start (not at a cap), or members found out to be at
  one the next time they are met (they are dropped then, and come back when a slot of
  theirs frees).
- ``flight`` hash: job id -> ``[priority, version, owner, group]`` for each job handed to
  the workers (on the arq queue or running) and not yet released; ``run:o`` and
  ``run:g`` hashes: jobs in flight per owner and per owner and group; ``cap:o`` hash:
  an owner's cap on jobs in flight (its key's max_running).
- ``n:<p>`` hash: owner -> waiting due jobs at p; ``ng:<p>:<owner>`` hash: group -> the
  same per group; ``total`` hash: p -> the same per priority.
- ``alive`` zset: worker id -> when its registration lapses (ms); ``slots`` hash: worker
  id -> its slots. The sum over live workers is how many jobs may be in flight.

ARGV[1] is the prefix, ARGV[2] the time now in ms, ARGV[3] the cap per group (0: none),
ARGV[4] how many of the arguments that follow are the hand-over's (0 for none); the script's
own arguments follow those, from ARGV[A]. A script that dispatches returns what it
dispatched through ``hand_over``: triples of job id, version and 0, or what the hand-over
function in ``HAND_OVER_SLOT`` made of them (``adapters.arq_patch.HandOver``: 1 for a job it
put on arq's queue).

Each call runs a few commands per job it moves, whatever the number of jobs, owners and
groups: a ring's head is read with the next member and both scores (``ZRANGE 0 1
WITHSCORES``), which tells whether the ring empties as its head leaves, and a member already
in its ring is not joined again. Values are kept as written (a job's JSON goes from
``where`` to ``flight`` as it is). A job added alone that finds no job waiting, no cap
reached and a slot free goes to ``flight`` at once (``starts_at_once``), without entering
and leaving the queues, rings and counts in the same call: about 19 commands of the
scheduler's instead of 50 (``tests/test_scheduler.py`` checks that it dispatches as the
full path does).
"""

from __future__ import annotations

PRIORITY_MIN = -10
PRIORITY_MAX = 10


def lua_string(value: str) -> str:
    """``value`` as a Lua string literal: every byte but letters, digits and ``_:-.`` as a
    decimal escape, whatever it holds."""
    safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:-."
    return '"' + "".join(chr(b) if b in safe else f"\\{b:03d}" for b in value.encode()) + '"'


# Where a script's hand-over function goes; without one, what is dispatched is returned.
HAND_OVER_SLOT = "--[[hand_over]]"
NO_HAND_OVER = """
local function hand_over(out) return out end
"""

_PRELUDE = """
local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local GROUP_CAP = tonumber(ARGV[3])
local A = 5 + tonumber(ARGV[4])  -- the script's own arguments start here
local WHERE, LATER, FLIGHT = P .. 'where', P .. 'later', P .. 'flight'
local PRIOS, TURN, TOTAL = P .. 'prios', P .. 'turn', P .. 'total'
local RUN_O, RUN_G, CAP_O = P .. 'run:o', P .. 'run:g', P .. 'cap:o'
local ALIVE, SLOTS, STARTS = P .. 'alive', P .. 'slots', P .. 'starts'
local HEAD = P .. 'head'
--[[hand_over]]

local function Q(p, o, g) return P .. 'q:' .. p .. ':' .. o .. '\\t' .. g end
local function GR(p, o) return P .. 'g:' .. p .. ':' .. o end
local function OR(p) return P .. 'o:' .. p end
local function NO(p) return P .. 'n:' .. p end
local function NG(p, o) return P .. 'ng:' .. p .. ':' .. o end
local function OG(o, g) return o .. '\\t' .. g end
local function PO(p) return P .. 'park:o:' .. p end
local function PG(p, o) return P .. 'park:g:' .. p .. ':' .. o end
local function turn() return redis.call('INCR', TURN) end
local function num(v) return tonumber(v or 0) or 0 end

-- one less of f in h (dropped at 0); returns how many are left
local function decr(h, f)
  local n = redis.call('HINCRBY', h, f, -1)
  if n <= 0 then redis.call('HDEL', h, f) end
  return n
end

local function owner_capped(o)
  local cap = num(redis.call('HGET', CAP_O, o))
  return cap > 0 and num(redis.call('HGET', RUN_O, o)) >= cap
end

local function group_capped(o, g)
  return GROUP_CAP > 0 and num(redis.call('HGET', RUN_G, OG(o, g))) >= GROUP_CAP
end

-- a member at a cap leaves its ring (where its turn was ``score``), keeping its turn for
-- when it may start again
local function park(ring, parked, m, score)
  redis.call('HSET', parked, m, score)
  redis.call('ZREM', ring, m)
end

-- a member not in its ring joins it: it takes the turn it kept when it was parked, or else
-- the next turn: the turn of the member served last, ahead of every member that waited
-- meanwhile
local function join(ring, parked, m)
  local kept = redis.call('HGET', parked, m)
  if kept then redis.call('HDEL', parked, m) end
  redis.call('ZADD', ring, kept or redis.call('HGET', HEAD, ring) or turn(), m)
end

-- a member joins its ring unless it is in it already (a member is in its ring, parked, or
-- neither); true when it joined
local function unpark(ring, parked, m)
  if redis.call('ZSCORE', ring, m) then return false end
  join(ring, parked, m)
  return true
end

-- a member served (its turn was ``score``): to the back of its ring while it ``stays``, or
-- out of it; ``alone``: it was the ring's only member
local function serve(ring, m, score, stays, alone)
  if stays then
    redis.call('HSET', HEAD, ring, score)
    redis.call('ZADD', ring, turn(), m)
  else
    redis.call('ZREM', ring, m)
    if alone then redis.call('HDEL', HEAD, ring) else redis.call('HSET', HEAD, ring, score) end
  end
end

-- a group with due jobs at p, and its owner, join their rings unless capped (an owner in
-- the ring of owners at p has p among the priorities already)
local function rejoin(p, o, g)
  if not group_capped(o, g) then
    unpark(GR(p, o), PG(p, o), g)
    if not redis.call('ZSCORE', OR(p), o) and not owner_capped(o) then
      join(OR(p), PO(p), o)
      redis.call('ZADD', PRIOS, p, p)
    end
  end
end

-- a due job joins its group's queue; its group and owner join their rings unless capped
local function enter(j, p, o, g)
  redis.call('ZADD', Q(p, o, g), turn(), j)
  redis.call('HINCRBY', NO(p), o, 1)
  redis.call('HINCRBY', NG(p, o), g, 1)
  redis.call('HINCRBY', TOTAL, p, 1)
  rejoin(p, o, g)
end

-- a due job leaves its group's queue, and empty rings are dropped
local function leave(j, p, o, g)
  if redis.call('ZREM', Q(p, o, g), j) == 0 then return end
  decr(NO(p), o)
  decr(NG(p, o), g)
  decr(TOTAL, p)
  if redis.call('ZCARD', Q(p, o, g)) == 0 then redis.call('ZREM', GR(p, o), g) end
  if redis.call('ZCARD', GR(p, o)) == 0 then redis.call('ZREM', OR(p), o) end
  if redis.call('ZCARD', OR(p)) == 0 then redis.call('ZREM', PRIOS, p) end
end

-- the next job in order that may start, taken off its queue; false when none may. Each
-- ring is read as its head and the member after it, with their turns: {m1, s1, m2, s2}.
local function pick()
  while true do
    local top = redis.call('ZREVRANGE', PRIOS, 0, 0)
    if #top == 0 then return false end
    local p = top[1]
    local ring_o = OR(p)
    local owners = redis.call('ZRANGE', ring_o, 0, 1, 'WITHSCORES')
    if #owners == 0 then
      redis.call('ZREM', PRIOS, p)
    else
      local o = owners[1]
      local ring_g = GR(p, o)
      if owner_capped(o) then
        park(ring_o, PO(p), o, owners[2])
      else
        local groups = redis.call('ZRANGE', ring_g, 0, 1, 'WITHSCORES')
        if #groups == 0 then
          redis.call('ZREM', ring_o, o)
        else
          local g = groups[1]
          local q = Q(p, o, g)
          if group_capped(o, g) then
            park(ring_g, PG(p, o), g, groups[2])
          else
            local head = redis.call('ZRANGE', q, 0, 1)
            if #head == 0 then
              redis.call('ZREM', ring_g, g)
            else
              local j = head[1]
              redis.call('ZREM', q, j)
              decr(NO(p), o)
              decr(NG(p, o), g)
              decr(TOTAL, p)
              local g_stays = #head > 1
              local o_stays = g_stays or #groups > 2
              serve(ring_g, g, groups[2], g_stays, #groups == 2)
              serve(ring_o, o, owners[2], o_stays, #owners == 2)
              if not o_stays and #owners == 2 then redis.call('ZREM', PRIOS, p) end
              return j
            end
          end
        end
      end
    end
  end
end

local function unpark_group(o, g)
  for p = {pmin}, {pmax} do
    if redis.call('ZCARD', Q(p, o, g)) > 0 then rejoin(p, o, g) end
  end
end

local function unpark_owner(o)
  for p = {pmin}, {pmax} do
    if redis.call('ZCARD', GR(p, o)) > 0 and unpark(OR(p), PO(p), o) then
      redis.call('ZADD', PRIOS, p, p)
    end
  end
end

-- a job handed to the workers: ``raw`` is its JSON, [priority, version, owner, group]
local function occupy(j, raw, o, g)
  redis.call('HSET', FLIGHT, j, raw)
  redis.call('HINCRBY', RUN_O, o, 1)
  redis.call('HINCRBY', RUN_G, OG(o, g), 1)
end

-- a job in flight is done (or lost): its slot and its caps free up, and a group or owner
-- that a cap held back (at it before, under it now) joins its rings again. ``raw``: its
-- entry in flight, when read already.
local function release(j, raw)
  raw = raw or redis.call('HGET', FLIGHT, j)
  if not raw then return false end
  local w = cjson.decode(raw)
  local o, g = w[3], w[4]
  local cap = num(redis.call('HGET', CAP_O, o))
  redis.call('HDEL', FLIGHT, j)
  local ran_o = decr(RUN_O, o)
  local ran_g = decr(RUN_G, OG(o, g))
  if GROUP_CAP > 0 and ran_g + 1 >= GROUP_CAP and ran_g < GROUP_CAP then
    unpark_group(o, g)
  end
  if cap > 0 and ran_o + 1 >= cap and ran_o < cap then unpark_owner(o) end
  return w
end

-- a waiting job is taken back (canceled, past its deadline, moved to a new version)
local function remove_waiting(j)
  local raw = redis.call('HGET', WHERE, j)
  if not raw then return false end
  local w = cjson.decode(raw)
  redis.call('HDEL', WHERE, j)
  if redis.call('ZREM', LATER, j) == 0 then leave(j, w[1], w[3], w[4]) end
  return w
end

local function capacity()
  local lapsed = redis.call('ZRANGEBYSCORE', ALIVE, '-inf', NOW)
  for _, w in ipairs(lapsed) do redis.call('HDEL', SLOTS, w) end
  if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', ALIVE, '-inf', NOW) end
  local total = 0
  for _, n in ipairs(redis.call('HVALS', SLOTS)) do total = total + num(n) end
  return total
end

-- what this script has dispatched: {job id, version, 0, ...}; and the slots still free,
-- once counted
local out = {}
local free = nil

-- whether a due job of owner o and group g at p, added alone, starts at once, as the
-- first pick would start it after it entered: no job waits in the rings (no priority has
-- owners in its ring, no group of o is in o's ring at p, none due later is due now),
-- neither cap holds it back and a slot is free. The turns it would have taken and given
-- back at once are dropped as that pick would drop them (its rings were empty); taking it
-- skips the queue, the rings and the counts it would have entered and left in the same
-- call.
local function starts_at_once(p, o, g)
  if redis.call('EXISTS', PRIOS, GR(p, o)) > 0 then return false end
  if #redis.call('ZRANGEBYSCORE', LATER, '-inf', NOW, 'LIMIT', 0, 1) > 0 then return false end
  if owner_capped(o) or group_capped(o, g) then return false end
  free = free or capacity() - redis.call('HLEN', FLIGHT)
  if free <= 0 then return false end
  free = free - 1
  redis.call('HDEL', HEAD, GR(p, o), OR(p))
  redis.call('HDEL', PO(p), o)
  redis.call('HDEL', PG(p, o), g)
  return true
end

-- a job to wait its turn, or to start at once if it may (``alone``: the only one added by
-- this call; with others, they all enter first and the picks order them)
local function add(j, p, v, o, g, due_ms, cap, alone)
  local old = redis.call('HGET', FLIGHT, j)
  if old and cjson.decode(old)[2] >= v then return end
  local waiting = redis.call('HGET', WHERE, j)
  if waiting and cjson.decode(waiting)[2] >= v then return end
  if old then release(j, old) end
  if waiting then remove_waiting(j) end
  if cap == '0' then redis.call('HDEL', CAP_O, o)
  elseif cap ~= '' then redis.call('HSET', CAP_O, o, cap) end
  local raw = cjson.encode({p, v, o, g})
  if due_ms > NOW then
    redis.call('HSET', WHERE, j, raw)
    redis.call('ZADD', LATER, due_ms, j)
  elseif alone and starts_at_once(p, o, g) then
    occupy(j, raw, o, g)
    out[#out + 1] = j
    out[#out + 1] = v
    out[#out + 1] = 0
  else
    redis.call('HSET', WHERE, j, raw)
    enter(j, p, o, g)
  end
end

-- hand jobs to the workers in order while slots are free: {job id, version, 0, ...}, after
-- those the script dispatched already
local function dispatch()
  local due = redis.call('ZRANGEBYSCORE', LATER, '-inf', NOW, 'LIMIT', 0, 1000)
  for _, j in ipairs(due) do
    redis.call('ZREM', LATER, j)
    local w = cjson.decode(redis.call('HGET', WHERE, j))
    enter(j, w[1], w[3], w[4])
  end
  -- with no priority in the rings, no job may be picked: the slots need no count
  if redis.call('EXISTS', PRIOS) > 0 then
    free = capacity() - redis.call('HLEN', FLIGHT)
  else
    free = 0
  end
  while free > 0 do
    local j = pick()
    if not j then break end
    local raw = redis.call('HGET', WHERE, j)
    local w = cjson.decode(raw)
    redis.call('HDEL', WHERE, j)
    occupy(j, raw, w[3], w[4])
    out[#out + 1] = j
    out[#out + 1] = w[2]
    out[#out + 1] = 0
    free = free - 1
  end
  if #out > 0 then
    -- starts per 10 s, each count kept 70 s from its first start (read for a minute after
    -- its 10 s): the recent rate of starts
    local bucket = STARTS .. ':' .. math.floor(NOW / 10000)
    if redis.call('INCRBY', bucket, #out / 3) == #out / 3 then
      redis.call('PEXPIRE', bucket, 70000)
    end
  end
  return out
end
""".replace("{pmin}", str(PRIORITY_MIN)).replace("{pmax}", str(PRIORITY_MAX))

# ARGV[A..]: groups of seven: job id, priority, version, owner, group, due (ms), owner cap
# ('0': none, '': leave as it is). Adds each job that is not waiting or in flight at this
# version or a newer one (a newer version replaces an older one), then dispatches.
ADD = (
    _PRELUDE
    + """
local alone = #ARGV - A + 1 == 7
for i = A, #ARGV, 7 do
  add(ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4],
      tonumber(ARGV[i + 5]), ARGV[i + 6], alone)
end
return hand_over(dispatch())
"""
)

# ARGV[A..]: pairs of job id and version whose run ended (or was lost): released from
# flight unless the job is in flight at another version; then dispatch.
RELEASE = (
    _PRELUDE
    + """
for i = A, #ARGV, 2 do
  local raw = redis.call('HGET', FLIGHT, ARGV[i])
  if raw and cjson.decode(raw)[2] == tonumber(ARGV[i + 1]) then release(ARGV[i], raw) end
end
return hand_over(dispatch())
"""
)

# ARGV[A..]: job ids to take back, waiting or in flight; then dispatch.
REMOVE = (
    _PRELUDE
    + """
for i = A, #ARGV do
  if not remove_waiting(ARGV[i]) then release(ARGV[i]) end
end
return hand_over(dispatch())
"""
)

# ARGV[A]: worker id, ARGV[A + 1]: its slots (0: leave), ARGV[A + 2]: when it lapses (ms);
# then dispatch.
REGISTER = (
    _PRELUDE
    + """
if tonumber(ARGV[A + 1]) > 0 then
  redis.call('ZADD', ALIVE, tonumber(ARGV[A + 2]), ARGV[A])
  redis.call('HSET', SLOTS, ARGV[A], ARGV[A + 1])
else
  redis.call('ZREM', ALIVE, ARGV[A])
  redis.call('HDEL', SLOTS, ARGV[A])
end
return hand_over(dispatch())
"""
)

# ARGV[A..]: groups of five: job id, priority, version, owner, group of jobs found running
# (when the scheduler's state is rebuilt): in flight, holding their slots and caps.
OCCUPY = (
    _PRELUDE
    + """
for i = A, #ARGV, 5 do
  if redis.call('HEXISTS', FLIGHT, ARGV[i]) == 0 then
    local p, v, o, g = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4]
    occupy(ARGV[i], cjson.encode({p, v, o, g}), o, g)
  end
end
return 0
"""
)

# ARGV[A]: owner, ARGV[A + 1]: its cap ('0' for none); then dispatch.
SET_CAP = (
    _PRELUDE
    + """
if ARGV[A + 1] == '0' then redis.call('HDEL', CAP_O, ARGV[A])
else redis.call('HSET', CAP_O, ARGV[A], ARGV[A + 1]) end
unpark_owner(ARGV[A])
return hand_over(dispatch())
"""
)

# ARGV[A..]: job ids. Returns the starts of the last minute or so and the milliseconds
# they span, then for each job how many jobs start before it in the current order if no
# job arrives and no cap holds anyone back: 0 for a job handed to the workers, -1 for one
# not due yet or not here. A job that is the (k+1)-th of its group starts after k of its
# group and, per group of its owner, as many as the ring gives that group before it (k+1
# for a group ahead of it in the ring, k behind, at most what the group has); that makes it
# the (m+1)-th of its owner, and every other owner starts as many before it the same way.
POSITIONS = (
    _PRELUDE
    + """
local rings = {}
local function ring(key, counts_key)
  local cached = rings[key]
  if cached then return cached end
  local order, counts = {}, {}
  local members = redis.call('ZRANGE', key, 0, -1)
  for i, m in ipairs(members) do order[m] = i end
  local raw = redis.call('HGETALL', counts_key)
  for i = 1, #raw, 2 do counts[raw[i]] = tonumber(raw[i + 1]) end
  cached = {order = order, counts = counts, size = #members}
  rings[key] = cached
  return cached
end

-- jobs the other members of a ring start before the (n+1)-th start of member ``me``
local function before(r, me, n)
  local mine = r.order[me] or (r.size + 1)
  local sum = 0
  for m, count in pairs(r.counts) do
    if m ~= me then
      local rank = r.order[m]
      if rank then
        local turns = n
        if rank < mine then turns = n + 1 end
        sum = sum + math.min(count, turns)
      end
    end
  end
  return sum
end

local totals = {}
local raw_totals = redis.call('HGETALL', TOTAL)
for i = 1, #raw_totals, 2 do totals[tonumber(raw_totals[i])] = tonumber(raw_totals[i + 1]) end

local bucket = math.floor(NOW / 10000)
local recent = 0
for b = bucket - 5, bucket do recent = recent + num(redis.call('GET', STARTS .. ':' .. b)) end
local out = {recent, NOW - (bucket - 5) * 10000}
for i = A, #ARGV do
  local j = ARGV[i]
  local position = -1
  if redis.call('HEXISTS', FLIGHT, j) == 1 then
    position = 0
  else
    local raw = redis.call('HGET', WHERE, j)
    if raw and not redis.call('ZSCORE', LATER, j) then
      local w = cjson.decode(raw)
      local p, o, g = w[1], w[3], w[4]
      local k = redis.call('ZRANK', Q(p, o, g), j)
      if k then
        local higher = 0
        for q, n in pairs(totals) do if q > p then higher = higher + n end end
        local m = k + before(ring(GR(p, o), NG(p, o)), g, k)
        position = higher + m + before(ring(OR(p), NO(p)), o, m)
      end
    end
  end
  out[#out + 1] = position
end
return out
"""
)
