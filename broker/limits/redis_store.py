"""Rate windows in Redis, for many broker processes and hosts (`limits: {store: redis://...}`).

The same sliding windows as `broker.limits.windows.MemoryWindows`, one Redis hash per window
(field: slot index, value: the amount taken in that slot).  Every step is one Lua script run
on the server, so checking and taking are one atomic operation: no read-modify-write from
Python, no race between instances.  Times are the callers' clocks (seconds, sent in
milliseconds): hosts keep them within milliseconds by NTP, a skew of that size shifts a
window by as much.  Keys expire on their own once idle.  All keys share the hash tag of the
prefix, so a Redis Cluster keeps one call's windows in one slot.

redis-py (`pip install 'llama-broker[redis]'`) is imported when the store is opened.  A server
that cannot be reached or refuses a script is a `MeteringError` naming the store (never its
password): a limit that cannot be checked is not passed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import MeteringError, MissingDependency
from ..metering.paths import redact
from .windows import SLOTS, Held, Refused, Take

__all__ = ["RedisWindows"]

# KEYS: n windows, then the saturation marks.  ARGV: now_ms, n, then limit, amount, window_ms per window.
# Returns {1, slot, slot, ...} when taken, else {0, index (0: a mark), wait_ms, never}.
_TAKE = """
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local slots = tonumber(ARGV[3])
for i = n + 1, #KEYS do
  local untl = tonumber(redis.call('GET', KEYS[i]) or '0')
  if untl > now then return {0, 0, math.ceil(untl - now), 0, i - n} end
end
local taken = {1}
for i = 1, n do
  local base = 4 + (i - 1) * 3
  local limit, amount, window = tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local width = window / slots
  local cutoff = now - window
  local flat = redis.call('HGETALL', KEYS[i])
  local live, total = {}, 0
  for j = 1, #flat, 2 do
    local s, v = tonumber(flat[j]), tonumber(flat[j + 1])
    if (s + 1) * width <= cutoff then
      redis.call('HDEL', KEYS[i], flat[j])
    else
      total = total + v
      live[#live + 1] = {s, v}
    end
  end
  if amount > 0 and total + amount > limit then
    if amount > limit then return {0, i, window, 1} end
    table.sort(live, function(a, b) return a[1] < b[1] end)
    local freed = 0
    for _, e in ipairs(live) do
      freed = freed + e[2]
      if total - freed + amount <= limit then
        return {0, i, math.max(0, math.ceil((e[1] + 1) * width + window - now)), 0}
      end
    end
    return {0, i, window, 0}
  end
  taken[#taken + 1] = math.floor(now / width)
end
for i = 1, n do
  local base = 4 + (i - 1) * 3
  local amount, window = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  redis.call('HINCRBY', KEYS[i], taken[i + 1], amount)
  redis.call('PEXPIRE', KEYS[i], math.ceil(window * 2))
end
return taken
"""

# KEYS: the window.  ARGV: now_ms, amount, window_ms, slots.  Returns the slot.
_ADD = """
local now, amount, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local slot = math.floor(now / (window / tonumber(ARGV[4])))
redis.call('HINCRBY', KEYS[1], slot, amount)
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 2))
return slot
"""

# KEYS: the window.  ARGV: now_ms, slot, delta, window_ms, slots.  Settles a slot that still counts.
_ADJUST = """
local now, slot, delta, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local width = window / tonumber(ARGV[5])
if (slot + 1) * width <= now - window then return 0 end
if redis.call('HEXISTS', KEYS[1], slot) == 0 then return 0 end
local left = redis.call('HINCRBY', KEYS[1], slot, delta)
if left < 0 then redis.call('HSET', KEYS[1], slot, 0) end
return 1
"""

# KEYS: the mark.  ARGV: until_ms, now_ms.  A mark is only ever lengthened.
_MARK = """
local untl, now = tonumber(ARGV[1]), tonumber(ARGV[2])
if untl <= now then return 0 end
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur >= untl then return 0 end
redis.call('SET', KEYS[1], string.format('%d', untl), 'PX', math.ceil(untl - now))
return 1
"""


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class RedisWindows:
    """Rate windows in one Redis database, shared by every instance that names it."""

    blocking = True

    def __init__(self, url: str, *, client: Any = None) -> None:
        if client is None:
            try:
                import redis
            except ImportError as exc:  # pragma: no cover - the test extra installs it
                raise MissingDependency("redis limits store", "redis", "redis") from exc
            client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        self.client = client
        self.where = redact(url)
        self._take = client.register_script(_TAKE)
        self._add = client.register_script(_ADD)
        self._adjust = client.register_script(_ADJUST)
        self._mark = client.register_script(_MARK)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """redis-py's errors as one-line `MeteringError`s naming the store and the action."""
        from redis.exceptions import RedisError

        try:
            yield
        except RedisError as exc:
            raise MeteringError(f"the rate-limit store at {self.where} could not {action}: "
                                f"{type(exc).__name__}") from exc

    def take(self, takes: Sequence[Take], marks: Sequence[str], now: float) -> tuple[Held, ...] | Refused:
        args: list[Any] = [_ms(now), len(takes), SLOTS]
        for t in takes:
            args += [t.limit, t.amount, _ms(t.window_s)]
        with self._errors("check a limit"):
            out = self._take(keys=[t.key for t in takes] + list(marks), args=args)
        if int(out[0]) == 1:
            return tuple(Held(t.key, int(s), t.amount, t.window_s) for t, s in zip(takes, out[1:], strict=True))
        index, wait_s = int(out[1]), int(out[2]) / 1000
        if index == 0:
            return Refused(-1, wait_s, marks[int(out[4]) - 1])
        return Refused(index - 1, wait_s, takes[index - 1].key, never=bool(int(out[3])))

    def add(self, key: str, amount: int, window_s: float, now: float) -> Held:
        with self._errors("count a request"):
            slot = self._add(keys=[key], args=[_ms(now), amount, _ms(window_s), SLOTS])
        return Held(key, int(slot), amount, window_s)

    def adjust(self, held: Held, delta: int, now: float) -> None:
        if delta:
            with self._errors("settle a window"):
                self._adjust(keys=[held.key], args=[_ms(now), held.slot, delta, _ms(held.window_s), SLOTS])

    def mark(self, key: str, until: float, now: float) -> None:
        with self._errors("mark a route saturated"):
            self._mark(keys=[key], args=[_ms(until), _ms(now)])

    def close(self) -> None:
        self.client.close()
