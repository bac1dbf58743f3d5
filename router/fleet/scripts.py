"""The Lua scripts every fleet write goes through, each one atomic in Redis.

    publish  the leader's new snapshot: refused unless its fencing token is the current one;
             the trips it has taken in leave the trip list
    trip     a sidecar's trip: no lease needed, since a trip only lowers a canary's weight
    read     the state and the trips on top of it, in one consistent read
    acquire  take the leader lease if it is free; returns a new, higher fencing token
    renew    extend the lease, only while this controller still holds it
    resign   give the lease up at a clean stop
    forget   drop sidecars whose last heartbeat is too old from the roster (seen, sidecars,
             acks)

Epochs only go up. Every write takes the next one from `epoch`, but never at or below the
highest epoch a sidecar has acknowledged, nor the caller's own floor: after Redis comes
back empty, the fleet carries on above where it was instead of starting again at 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from router.fleet.keys import Keys

EVENTS_KEPT = 1000  # doorbell entries kept (approximately): readers re-read state anyway
TRIPS_KEPT = 200  # trips kept in Redis; a snapshot lists twice as many as taken in

_NEXT_EPOCH = """
local function next_epoch(epoch_key, acks_key, state_key, floor)
  local e = redis.call('INCR', epoch_key)
  local top = tonumber(floor) or 0
  local current = tonumber(redis.call('HGET', state_key, 'epoch') or '0')
  if current > top then top = current end
  for _, v in ipairs(redis.call('HVALS', acks_key)) do
    local n = tonumber(v)
    if n and n > top then top = n end
  end
  if e <= top then
    e = top + 1
    redis.call('SET', epoch_key, e)
  end
  return e
end
"""

# KEYS: state epoch events fence acks trips leader; ARGV: token floor body maxlen taken owner
# `taken`: a JSON list of the trip ids the snapshot has taken in; they leave `trips`, so
# sidecars read only the trips still pending.
PUBLISH = (
    _NEXT_EPOCH
    + """
local fence = tonumber(redis.call('GET', KEYS[4]) or '0')
if fence ~= tonumber(ARGV[1]) then
  return redis.error_reply('STALE fencing token ' .. ARGV[1] ..
                           ' refused: the fleet is at ' .. fence)
end
if redis.call('GET', KEYS[7]) ~= ARGV[6] then
  return redis.error_reply('STALE lease: ' .. ARGV[6] .. ' does not hold it')
end
local e = next_epoch(KEYS[2], KEYS[5], KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'epoch', e, 'body', ARGV[3], 'fence', ARGV[1])
local taken = {}
for _, uid in ipairs(cjson.decode(ARGV[5])) do taken[uid] = true end
local pending = {}
for _, raw in ipairs(redis.call('LRANGE', KEYS[6], 0, -1)) do
  local ok, entry = pcall(cjson.decode, raw)
  local uid = nil
  if ok and type(entry) == 'table' and type(entry.trip) == 'string' then
    local fine, trip = pcall(cjson.decode, entry.trip)
    if fine and type(trip) == 'table' then uid = trip.uid end
  end
  if not (uid and taken[uid]) then table.insert(pending, raw) end
end
redis.call('DEL', KEYS[6])
if #pending > 0 then redis.call('RPUSH', KEYS[6], unpack(pending)) end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'epoch', e, 'kind', 'snapshot')
return e
"""
)

# KEYS: state epoch events trips acks; ARGV: floor trip maxlen kept
TRIP = (
    _NEXT_EPOCH
    + """
local e = next_epoch(KEYS[2], KEYS[5], KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[4], cjson.encode({epoch = e, trip = ARGV[2]}))
redis.call('LTRIM', KEYS[4], -tonumber(ARGV[4]), -1)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'epoch', e, 'kind', 'trip')
return e
"""
)

# KEYS: state trips
READ = """
return {redis.call('HGET', KEYS[1], 'epoch'), redis.call('HGET', KEYS[1], 'body'),
        redis.call('LRANGE', KEYS[2], 0, -1)}
"""

# KEYS: leader fence; ARGV: id ttl_ms floor
ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local token = redis.call('INCR', KEYS[2])
  if token <= tonumber(ARGV[3]) then
    token = tonumber(ARGV[3]) + 1
    redis.call('SET', KEYS[2], token)
  end
  return token
end
return false
"""

# KEYS: leader; ARGV: id ttl_ms
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: leader; ARGV: id
RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: seen sidecars acks; ARGV: cutoff_ms limit
# In one step; a heartbeat (one MULTI) lands before it (the sidecar stays) or after (it
# registers again).
FORGET = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1],
                        'LIMIT', 0, tonumber(ARGV[2]))
for _, name in ipairs(gone) do
  redis.call('ZREM', KEYS[1], name)
  redis.call('HDEL', KEYS[2], name)
  redis.call('HDEL', KEYS[3], name)
end
return gone
"""


def last_event_id(reply: Any, default: bytes | str) -> bytes | str:
    """The id of the newest entry in a RESP2 reply (the protocol the fleet's clients speak)
    to XREAD on one stream (`[[stream, [(id, fields), ...]]]`) or to XREVRANGE
    (`[(id, fields), ...]`); `default` when it has none."""
    if not reply:
        return default
    first = reply[0]
    if len(first) == 2 and isinstance(first[1], list):  # XREAD: [stream, entries]
        return first[1][-1][0] if first[1] else default
    return first[0]  # type: ignore[no-any-return]


class StaleFence(Exception):
    """Redis refused a write: another controller leads with a newer fencing token."""


@dataclass(frozen=True, slots=True)
class Read:
    """The fleet's state as one read saw it: the snapshot (None when Redis has none) and
    the trips on top of it, each with the epoch it was written at."""

    epoch: int | None
    body: dict[str, Any] | None
    trips: list[tuple[int, dict[str, Any]]]
    problem: str | None = None  # a snapshot that is not the fleet's JSON: refused

    @property
    def latest(self) -> int:
        """The newest epoch in this read: the snapshot's, or a later trip's."""
        return max([self.epoch or 0, *(epoch for epoch, _ in self.trips)])


class Scripts:
    """The scripts, registered once on a client (redis-py loads them by SHA, with EVAL as
    the fallback after Redis restarts empty)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.keys = keys
        self._publish = redis.register_script(PUBLISH)
        self._trip = redis.register_script(TRIP)
        self._read = redis.register_script(READ)
        self._acquire = redis.register_script(ACQUIRE)
        self._renew = redis.register_script(RENEW)
        self._resign = redis.register_script(RESIGN)
        self._forget = redis.register_script(FORGET)

    async def publish(
        self, token: int, owner: str, floor: int, body: bytes, taken: Sequence[str] = ()
    ) -> int:
        """Write a new snapshot that has taken in the trips `taken`; returns its epoch.
        Raises StaleFence unless `token` is the current fencing token and `owner` holds the
        lease (a token alone could repeat after Redis lost its counter)."""
        k = self.keys
        try:
            epoch = await self._publish(
                keys=[k.state, k.epoch, k.events, k.fence, k.acks, k.trips, k.leader],
                args=[token, floor, body, EVENTS_KEPT, orjson.dumps(list(taken)), owner],
            )
        except ResponseError as exc:
            if str(exc).startswith("STALE"):
                raise StaleFence(str(exc)) from None
            raise
        return int(epoch)

    async def trip(self, floor: int, trip: dict[str, Any]) -> int:
        """Write a sidecar's trip; returns its epoch."""
        k = self.keys
        epoch = await self._trip(
            keys=[k.state, k.epoch, k.events, k.trips, k.acks],
            args=[floor, orjson.dumps(trip), EVENTS_KEPT, TRIPS_KEPT],
        )
        return int(epoch)

    async def read(self) -> Read:
        """The state and the pending trips. A trip entry that is not a sidecar's is skipped;
        a body that does not parse is reported in `problem`, never raised."""
        k = self.keys
        epoch, body, trips = await self._read(keys=[k.state, k.trips])
        parsed = []
        for raw in trips:
            try:
                entry = orjson.loads(raw)
                trip = orjson.loads(entry["trip"])
                at = int(entry["epoch"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if isinstance(trip, dict) and all(
                isinstance(trip.get(key), str) for key in ("uid", "route", "version")
            ):
                parsed.append((at, trip))
        problem, snapshot = None, None
        if body is not None:
            try:
                snapshot = orjson.loads(body)
            except orjson.JSONDecodeError:
                problem = "the snapshot in Redis is not JSON"
            else:
                if not isinstance(snapshot, dict):
                    problem, snapshot = "the snapshot in Redis is not a JSON object", None
        try:
            number = int(epoch) if epoch is not None else None
        except ValueError:
            number, problem = None, f"the snapshot's epoch {epoch!r} is not a number"
        return Read(number, snapshot, parsed, problem)

    async def acquire(self, owner: str, ttl: float, floor: int) -> int | None:
        """Take the lease if nobody holds it; returns the new fencing token, or None."""
        k = self.keys
        token = await self._acquire(keys=[k.leader, k.fence], args=[owner, int(ttl * 1000), floor])
        return int(token) if token is not None else None

    async def renew(self, owner: str, ttl: float) -> bool:
        return bool(await self._renew(keys=[self.keys.leader], args=[owner, int(ttl * 1000)]))

    async def resign(self, owner: str) -> None:
        await self._resign(keys=[self.keys.leader], args=[owner])

    async def forget(self, last_seen_before: float, limit: int = 1000) -> list[str]:
        """Drop the sidecars whose last heartbeat is older than `last_seen_before` (unix
        seconds), at most `limit` of them; their names."""
        k = self.keys
        gone = await self._forget(
            keys=[k.seen, k.sidecars, k.acks], args=[int(last_seen_before * 1000), limit]
        )
        return [name.decode() if isinstance(name, bytes) else str(name) for name in gone]
