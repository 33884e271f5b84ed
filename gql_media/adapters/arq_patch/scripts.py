"""arq's writes, in the scheduler's scripts and the worker's start script: the Lua that
mirrors ``enqueue_job``, ``start_jobs``, ``run_job``'s first read and ``finish_job`` (see the
package docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from arq.connections import ArqRedis
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

from gql_media import keys
from gql_media.adapters.scheduling.lua import lua_string

# A Lua function for the scheduler's scripts (``adapters.scheduling.lua``): ``out`` holds
# what they dispatched, triples of job id, version and a flag set here (1: the entry is on
# arq's queue, put there now or, when arq has seen its id, as enqueue_job leaves it: a
# duplicate enqueue is harmless; 2: started for the caller; 3: started for an idle worker).
# Its arguments (``HandOver.args``) are ARGV[5] how many of the first entries are the
# caller's (left out of the wake-up), ARGV[6] the life (ms) of the in-progress mark of
# those it starts for the caller (0: none is started, they are put on the queue), ARGV[7]
# the calling worker's id ('' for none), ARGV[8] how many of that worker's slots idle now
# (-1: unchanged), ARGV[9] how many entries ended follow (their keys go as finish_job drops
# them), then those entries, then the changes to publish, up to the script's own arguments
# (ARGV[A]).
#
# An entry whose id arq has not seen (no call, result, mark or try count) is started as
# START starts one, in this script: its call stored, marked in progress, its try counted.
# The caller's are started for the caller, which runs them with what it knows (the entry's
# id and call, try 1), and are not put on the queue (they would leave it as they start).
# Any other is started for a worker that idles, if one does: ``IDLE`` lists a worker's id
# once for each of its slots that idles (``MARKS``: the life of its in-progress mark), and
# the entry goes to the one at the head, on its own wake-up channel (``WAKE .. ':' ..
# id``: "<started, ms> <entry>"), after the changes are published. Such an entry is also
# put on the queue, due a second later, its in-progress mark holding that worker's id:
# other workers' starts pass it over, and START starts it for that worker (its try counted
# already) should the message be lost. The rest are queued and named in one wake-up for
# every worker. A worker's slot counts as idle from when it says so (ARGV[8]: its ids are
# set to that many) or a run of its ends with nothing handed to it, until an entry is
# started for it here or by its START; ids of workers no longer registered (``SLOTS``, the
# scheduler's) are dropped as they come up.
#
# The names it writes under are constants (``HandOver.lua``). The stored call is the JSON
# of arq's ``serialize_job`` dict (``adapters.redis.dump_call``) for ``run_job(job_id)``,
# the entry's id ``keys.arq_job_id``'s (MARK), its score and enqueue time now (ARGV[2]).
HAND_OVER = """
local TRIES_LIFE = 88400  -- arq's run_job: the try count's expiry, in s
-- an entry started for a worker is due on the queue this much later (ms): its worker's
-- read starts it then should the message be lost; reads meet it no sooner
local LOST_AFTER = 1000

-- the next worker with an idle slot, and the life of its in-progress mark; nil for none
local function idle_worker()
  while true do
    local w = redis.call('LPOP', IDLE)
    if not w then return nil end
    local mark = redis.call('HEXISTS', SLOTS, w) == 1 and tonumber(redis.call('HGET', MARKS, w))
    if mark and mark > 0 then return w, mark end
  end
end

local function hand_over(out)
  local keep, mark_ms, caller = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
  local idle, ended = tonumber(ARGV[8]), 9 + tonumber(ARGV[9])
  for i = 10, ended do
    local id = ARGV[i]
    redis.call('DEL', PROGRESS .. id, TRIES .. id, CALL .. id)
    redis.call('ZREM', ABORT, id)
    redis.call('ZREM', QUEUE, id)
  end
  if idle >= 0 and caller ~= '' then
    redis.call('LREM', IDLE, 0, caller)
    if idle > 0 and mark_ms > 0 then
      redis.call('HSET', MARKS, caller, mark_ms)
      for _ = 1, idle do redis.call('RPUSH', IDLE, caller) end
    else
      redis.call('HDEL', MARKS, caller)
    end
  end
  local woken, kept, sent = {}, 0, {}
  for i = 1, #out, 3 do
    local id = out[i] .. MARK .. out[i + 1]
    local call = CALL .. id
    local mine, state, mark, to = kept < keep, 1, 0, nil
    local unseen = redis.call('EXISTS', call, RESULT .. id, PROGRESS .. id, TRIES .. id) == 0
    if unseen and mine then
      if mark_ms > 0 then state, mark = 2, mark_ms end
    elseif unseen then
      to, mark = idle_worker()
      if to then state = 3 end
    end
    -- an id arq has seen is left as enqueue_job leaves it
    if unseen or redis.call('EXISTS', call, RESULT .. id) == 0 then
      redis.call('PSETEX', call, EXPIRES, '{"t":null,"f":' .. FN ..
        ',"a":[' .. cjson.encode(out[i]) .. '],"k":{},"et":' .. ARGV[2] .. '}')
      -- queued, or started for a worker that reads it there should its message be lost
      if state == 1 then redis.call('ZADD', QUEUE, ARGV[2], id) end
      if state == 3 then redis.call('ZADD', QUEUE, tonumber(ARGV[2]) + LOST_AFTER, id) end
    end
    if state > 1 then
      redis.call('PSETEX', PROGRESS .. id, mark, to or '1')
      redis.call('SET', TRIES .. id, 1, 'EX', TRIES_LIFE)
    end
    out[i + 2] = state
    if mine then
      kept = kept + 1
    elseif to then
      sent[#sent + 1] = to
      sent[#sent + 1] = ARGV[2] .. ' ' .. id
    else
      woken[#woken + 1] = id
    end
  end
  -- the caller's slots that nothing was handed to idle now
  if caller ~= '' and mark_ms > 0 then
    for _ = kept + 1, keep do redis.call('RPUSH', IDLE, caller) end
  end
  for i = ended + 1, A - 1 do redis.call('PUBLISH', CHANNEL, ARGV[i]) end
  for i = 1, #sent, 2 do redis.call('PUBLISH', WAKE .. ':' .. sent[i], sent[i + 1]) end
  if #woken > 0 then redis.call('PUBLISH', WAKE, table.concat(woken, ' ')) end
  return out
end
"""

# KEYS[1]: the queue; ARGV[1]: the in-progress prefix, ARGV[2]: now (ms), ARGV[3]: the
# mark's life (ms), ARGV[4]: how many to start at most, ARGV[5]: '1' to take the started
# entries off the queue, ARGV[6]: the stored call's prefix, or '' not to read it, ARGV[7]:
# the try count's prefix, ARGV[8]: the list of idle slots (HAND_OVER's ``IDLE``), ARGV[9]:
# the worker's id ('' for none), ARGV[10..]: entries, in order. Starts entries as arq's
# start_jobs does, going down the list: one is started when it is on the queue, due and
# not marked in progress (by another worker), or marked with this worker's id (HAND_OVER
# started it for this worker); the others are passed over. For each one started it then
# does what arq's run_job does first (reads the stored call, counts the try and sets the
# count's expiry; the try of one HAND_OVER started is counted already) and returns, flat:
# the entry, its score, the call (false when gone) and the try (0 when not read). The
# slots of the others no longer idle.
START = """
local TRIES_LIFE = 88400  -- arq's run_job: the try count's expiry, in s
local out, limit = {}, tonumber(ARGV[4])
local fresh = 0  -- started here, not by HAND_OVER
for i = 10, #ARGV do
  if #out >= 4 * limit then break end
  local mark = ARGV[1] .. ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  local held, mine = true, false  -- marked in progress; by HAND_OVER, for this worker
  if score and tonumber(score) <= tonumber(ARGV[2]) then
    held = redis.call('GET', mark)
    mine = held and ARGV[9] ~= '' and held == ARGV[9]
  end
  if not held or mine then
    redis.call('PSETEX', mark, ARGV[3], '1')
    if ARGV[5] == '1' then redis.call('ZREM', KEYS[1], ARGV[i]) end
    local call, try = false, 0
    if ARGV[6] ~= '' then
      call = redis.call('GET', ARGV[6] .. ARGV[i])
      try = mine and tonumber(redis.call('GET', ARGV[7] .. ARGV[i])) or false
      if not try then
        try = redis.call('INCR', ARGV[7] .. ARGV[i])
        redis.call('EXPIRE', ARGV[7] .. ARGV[i], TRIES_LIFE)
      end
    end
    if not mine then fresh = fresh + 1 end
    out[#out + 1] = ARGV[i]
    out[#out + 1] = score
    out[#out + 1] = call
    out[#out + 1] = try
  end
end
if fresh > 0 and ARGV[9] ~= '' then redis.call('LREM', ARGV[8], fresh, ARGV[9]) end
return out
"""


@dataclass(frozen=True, slots=True)
class HandOver:
    """What the scheduler's scripts need to put the jobs they dispatch on arq's queue
    (``HAND_OVER``), publish the jobs' changes on ``channel`` and wake the workers, or
    start the jobs for workers that idle (``idle``)."""

    queue: str
    wake: str
    channel: str
    expires_ms: int
    idle: str

    @classmethod
    def of(cls, redis: ArqRedis, namespace: str) -> HandOver:
        return cls(
            keys.queue_name(namespace),
            keys.wake_channel(namespace),
            keys.events_channel(namespace),
            redis.expires_extra_ms,
            keys.idle_slots(namespace),
        )

    @property
    def lua(self) -> str:
        """``HAND_OVER`` with the names it writes under, as constants of the script."""
        names = {
            "QUEUE": self.queue,
            "CALL": job_key_prefix,
            "RESULT": result_key_prefix,
            "PROGRESS": in_progress_key_prefix,
            "TRIES": retry_key_prefix,
            "ABORT": abort_jobs_ss,
            "FN": orjson.dumps(keys.RUN_JOB_TASK).decode(),  # as JSON, in the stored call
            "MARK": keys.ARQ_VERSION_MARK,  # the entry's id: keys.arq_job_id
            "EXPIRES": str(self.expires_ms),
            "WAKE": self.wake,
            "CHANNEL": self.channel,
            "IDLE": self.idle,
            "MARKS": self.idle + ":marks",
        }
        constants = "".join(f"local {k} = {lua_string(v)}\n" for k, v in names.items())
        return constants + HAND_OVER

    def args(
        self,
        keep: int,
        events: Sequence[bytes],
        done: Sequence[str] = (),
        start_ms: int = 0,
        worker: str = "",
        idle: int = -1,
    ) -> list[str | int | bytes]:
        """The script's arguments: the first ``keep`` entries are left out of the wake-up
        (the caller starts them; with ``start_ms``, the life of arq's in-progress mark, the
        script starts those it can for the caller); ``events`` are published before it; the
        entries ``done`` (arq ids) ended, and their keys go as arq's ``finish_job`` drops
        them (``WakeableWorker.finish_job``). ``worker``: the caller's id, when it is a
        worker that takes entries started for it (``WakeableWorker.idle_id``): with
        ``start_ms``, its slots among the first ``keep`` that nothing is handed to idle
        from now on, and ``idle`` (not -1) is how many of its slots idle now."""
        return [keep, start_ms, worker, idle if worker else -1, len(done), *done, *events]
