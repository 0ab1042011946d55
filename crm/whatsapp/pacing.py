"""One rate limiter per number: never more sends than allowed over any 1 s and any 60 s window,
as the provider counts them when they arrive.

A slot is taken before the attempt is committed (so two senders never count on the same slot),
marked in flight right before the request leaves (``restamp``) and counted from the moment the
answer came back (``settle``). The provider counted the send somewhere in between, so a slot is
only free again once a whole window has passed since the answer: whatever the delays on the way,
the provider never sees more than the limit in any of its windows. A sender killed mid-request
leaves its slot in flight for ``FLIGHT_GUARD``, then it runs out like any other.

The windows are trimmed by time on every call; their Redis keys outlive an idle number by a few
minutes only (the limiter's time is the caller's clock, so a key never expires under a window
that is still open).

Sliding-window logs: in Redis (shared by every worker) in scaled mode, in memory in embedded mode
(one process). ``reserve`` either takes a slot now (returns 0) or says how long to wait.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
import uuid

from flask import current_app

from crm.whatsapp.models import WhatsAppAccount

log = logging.getLogger(__name__)

# How long a slot stays in flight when its sender never says the answer came back (killed during
# the request): longer than any request (the Cloud API client's timeouts, a media upload included).
FLIGHT_GUARD = 120.0
# When every slot of a full window is in flight, how long a sender waits before looking again.
IN_FLIGHT_RECHECK = 0.05

# ARGV: now, member, score (when the slot counts from), then (window, limit) pairs; one key each.
# Returns '0' when the slot was taken, else the seconds until one frees.
_RESERVE_LUA = f"""
local now = tonumber(ARGV[1])
local n = (#ARGV - 3) / 2
for i = 1, n do
  local window = tonumber(ARGV[2 + i * 2])
  local limit = tonumber(ARGV[3 + i * 2])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  if redis.call('ZCARD', KEYS[i]) >= limit then
    local oldest = tonumber(redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')[2])
    if oldest > now then return tostring({IN_FLIGHT_RECHECK}) end
    return tostring(oldest + window - now)
  end
end
for i = 1, n do
  redis.call('ZADD', KEYS[i], tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[i], math.ceil((tonumber(ARGV[2 + i * 2]) + {FLIGHT_GUARD}) * 1000) + 300000)
end
return '0'
"""

# The slot this sender took goes in flight (score: now + FLIGHT_GUARD). A slot that ran out
# meanwhile (the attempt's commit took longer than the window) is taken afresh, in flight.
_RESTAMP_LUA = """
local now = tonumber(ARGV[1])
local n = (#ARGV - 3) / 2
local kept = true
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - tonumber(ARGV[2 + i * 2]))
  if not redis.call('ZSCORE', KEYS[i], ARGV[2]) then kept = false end
end
if kept then
  for i = 1, n do
    redis.call('ZADD', KEYS[i], 'XX', tonumber(ARGV[3]), ARGV[2])
  end
  return '0'
end
for i = 1, n do
  redis.call('ZREM', KEYS[i], ARGV[2])
end
""" + _RESERVE_LUA.split("local n = (#ARGV - 3) / 2", 1)[1]

# The answer came back: the slot counts from now (added again if it ran out in flight).
_SETTLE_LUA = f"""
local n = (#ARGV - 3) / 2
for i = 1, n do
  redis.call('ZADD', KEYS[i], tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[i], math.ceil((tonumber(ARGV[2 + i * 2]) + {FLIGHT_GUARD}) * 1000) + 300000)
end
return '0'
"""

# Each window's log, oldest first: (score, member) pairs, in embedded mode.
_memory: dict[str, list[tuple[float, str]]] = {}
_memory_lock = threading.Lock()
# The slot each sender thread took last (``reserve``) and the one it has in flight (``restamp``):
# (number, member, the number's windows), so a send works its windows out once.
_taken = threading.local()


def limits_for(account: WhatsAppAccount) -> list[tuple[float, int]]:
    """(window seconds, max sends) pairs for this number."""
    from crm.whatsapp.providers.registry import get_provider

    per_second, per_minute = get_provider(account.provider).default_limits(account)
    if account.provider == "webqr":
        from crm.whatsapp.webqr_pacing import WebQRPacing

        per_minute = WebQRPacing.of(account).per_minute
    if account.max_per_minute:
        per_minute = account.max_per_minute if per_minute is None else min(per_minute, account.max_per_minute)
    windows: list[tuple[float, int]] = []
    if per_second:
        windows.append((1.0, per_second))
    if per_minute:
        windows.append((60.0, per_minute))
    return windows


def _trim(entries: list[tuple[float, str]], now: float, window: float) -> None:
    cut = bisect.bisect_right(entries, (now - window, "\uffff"))
    del entries[:cut]


def _drop(entries: list[tuple[float, str]], member: str) -> bool:
    for index, (_score, held) in enumerate(entries):
        if held == member:
            del entries[index]
            return True
    return False


def _memory_call(
    mode: str, account_id: int, windows: list[tuple[float, int]], now: float, member: str, score: float
) -> float:
    """The three scripts above, on the in-process logs (same arguments, same answers)."""
    with _memory_lock:
        logs = [
            (_memory.setdefault(f"{account_id}:{window}", []), window, limit) for window, limit in windows
        ]
        if mode == "settle":
            for entries, _window, _limit in logs:
                _drop(entries, member)
                bisect.insort(entries, (score, member))
            return 0.0
        for entries, window, _limit in logs:
            _trim(entries, now, window)
        if mode == "restamp":
            dropped = [_drop(entries, member) for entries, _window, _limit in logs]
            if all(dropped):
                for entries, _window, _limit in logs:
                    bisect.insort(entries, (score, member))
                return 0.0
        for entries, window, limit in logs:
            if len(entries) >= limit:
                oldest = entries[0][0]
                return IN_FLIGHT_RECHECK if oldest > now else oldest + window - now
        for entries, _window, _limit in logs:
            bisect.insort(entries, (score, member))
        return 0.0


_SCRIPTS = {"reserve": _RESERVE_LUA, "restamp": _RESTAMP_LUA, "settle": _SETTLE_LUA}


def _call(
    mode: str, account_id: int, windows: list[tuple[float, int]], member: str, in_flight: bool
) -> float:
    now = time.time()
    score = now + FLIGHT_GUARD if in_flight else now
    if not current_app.config.get("REDIS_URL"):
        return _memory_call(mode, account_id, windows, now, member, score)
    from crm.redis import get_redis

    keys = [f"zapdesk:pace:{account_id}:{window}" for window, _ in windows]
    args: list[str | float | int] = [now, member, score]
    for window, limit in windows:
        args += [window, limit]
    return float(get_redis().eval(_SCRIPTS[mode], len(keys), *keys, *args))


def reserve(account: WhatsAppAccount) -> float:
    """Take a send slot now (0.0), or return the seconds to wait before one frees up."""
    windows = limits_for(account)
    if not windows:
        return 0.0
    member = uuid.uuid4().hex
    wait = _call("reserve", account.id, windows, member, in_flight=False)
    if wait == 0:
        _taken.slot = (account.id, member, windows)
    return wait


def restamp(account: WhatsAppAccount) -> float:
    """Right before the request leaves, put the slot this thread took for ``account`` (``reserve``)
    in flight until ``settle``: 0.0, or, when that slot ran out meanwhile and no other is free, the
    seconds to wait. Never lets more through than ``reserve`` does."""
    taken = getattr(_taken, "slot", None)
    _taken.slot = None
    if taken is not None and taken[0] == account.id:
        member, windows = taken[1], taken[2]
    else:  # no slot of this number taken by this thread: take one, straight in flight
        member, windows = uuid.uuid4().hex, limits_for(account)
        if not windows:
            return 0.0
    wait = _call("restamp", account.id, windows, member, in_flight=True)
    if wait == 0:
        _taken.flight = (account.id, member, windows)
    return wait


def settle(account: WhatsAppAccount) -> None:
    """The request put in flight by ``restamp`` came back (answered or not): its slot counts from
    now, a whole window after which it is free. Never raises: a slot left in flight only frees
    later (``FLIGHT_GUARD``), which errs on the safe side."""
    flight = getattr(_taken, "flight", None)
    _taken.flight = None
    if flight is None or flight[0] != account.id:
        return
    try:
        _call("settle", account.id, flight[2], flight[1], in_flight=False)
    except Exception:
        log.warning(
            "number %s: the pacing slot of a finished request could not be settled", account.id, exc_info=True
        )


def forget_local_windows() -> None:
    """Drop the in-process windows and this thread's slots (tests start each case from a clean
    slate)."""
    with _memory_lock:
        _memory.clear()
    _taken.slot = _taken.flight = None
