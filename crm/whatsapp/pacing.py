"""One rate limiter per number: never more sends than allowed over any 1 s and any 60 s window
(a slot of the 1 s window is held a little longer, so the provider's count at arrival agrees: see
``ARRIVAL_SLACK``).

The windows are trimmed by time on every call; their Redis keys outlive an idle number by a few
minutes only (the limiter's time is the caller's clock, so a key never expires under a window
that is still open).

Sliding-window logs: in Redis (shared by every worker) in scaled mode, in memory in embedded mode
(one process). ``reserve`` either takes a slot now (returns 0) or says how long to wait; the
sender takes it before committing its attempt (so two senders never count on the same slot) and
moves it to the moment of the request with ``restamp``, right before calling the provider.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from typing import Any

from flask import current_app

from crm.whatsapp.models import WhatsAppAccount

_RESERVE_LUA = """
local now = tonumber(ARGV[1])
local n = (#ARGV - 2) / 2
for i = 1, n do
  local window = tonumber(ARGV[1 + i * 2])
  local limit = tonumber(ARGV[2 + i * 2])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  if redis.call('ZCARD', KEYS[i]) >= limit then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    return tostring(tonumber(oldest[2]) + window - now)
  end
end
for i = 1, n do
  local window = tonumber(ARGV[1 + i * 2])
  redis.call('ZADD', KEYS[i], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[i], math.ceil(window * 1000) + 300000)
end
return '0'
"""

# The slot this sender took moves to ``now``, the moment its request leaves: a slot only ever
# moves later, so every window it is counted in still held at most the limit when the slot was
# taken. A slot that ran out meanwhile (the attempt took longer than the window) is taken afresh.
_RESTAMP_LUA = """
local now = tonumber(ARGV[1])
local n = (#ARGV - 2) / 2
local kept = true
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - tonumber(ARGV[1 + i * 2]))
  if not redis.call('ZSCORE', KEYS[i], ARGV[2]) then kept = false end
end
if kept then
  for i = 1, n do
    redis.call('ZADD', KEYS[i], 'XX', now, ARGV[2])
  end
  return '0'
end
for i = 1, n do
  redis.call('ZREM', KEYS[i], ARGV[2])
end
""" + _RESERVE_LUA.split("local n = (#ARGV - 2) / 2", 1)[1]

# The provider counts a send when it arrives; we count it when the slot is stamped. A 1 s window
# counted at exactly Meta's limit lets a slot be taken again the moment it frees, so a send delayed
# a little less than the one it replaces lands 81st in Meta's window: 130429. A slot of a short
# window is therefore held this much longer than the window. Stamped when the slot was taken, the
# delay to arrival included the attempt's commit and varied from 3 ms to several hundred (p99
# ~100 ms on the 2-core bench machine), which needed 0.1 s: 80 per 1.1 s, at most 72.7/s. Stamped
# again right before the request (``restamp``), what is left in between is the stamp's own Redis
# round trip, building the request and the call, each waiting for the interpreter lock among the
# sender threads: 0.02 s of slack still met 70 refusals in 54,703 sends (one every 12 s, each
# pausing the number 1 s), so the slack is 0.05 s: 80 per 1.05 s, 76.2/s sustained
# (bench/broadcast.py, BENCHMARKS.md). Longer windows (60 s) keep their exact length: the same
# delay is a negligible share of them.
ARRIVAL_SLACK = 0.05
SHORT_WINDOW = 1.0


def _held(window: float) -> float:
    """How long a slot of ``window`` stays taken (the keys keep the window's own name)."""
    return window + ARRIVAL_SLACK if window <= SHORT_WINDOW else window


_memory: dict[str, deque[float]] = {}
_memory_lock = threading.Lock()
# The slot each sender thread took last (its number, and its id in the windows), for ``restamp``.
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


def _reserve_memory(account_id: int, windows: list[tuple[float, int]], now: float) -> float:
    with _memory_lock:
        return _reserve_memory_locked(account_id, windows, now)


def _reserve_memory_locked(account_id: int, windows: list[tuple[float, int]], now: float) -> float:
    logs = []
    for window, limit in windows:
        log = _memory.setdefault(f"{account_id}:{window}", deque())
        while log and log[0] <= now - _held(window):
            log.popleft()
        if len(log) >= limit:
            return log[0] + _held(window) - now
        logs.append(log)
    for log in logs:
        log.append(now)
    _taken.slot = (account_id, now)
    return 0.0


def _restamp_memory(account_id: int, windows: list[tuple[float, int]], slot: float, now: float) -> float:
    with _memory_lock:
        logs = []
        for window, _limit in windows:
            log = _memory.setdefault(f"{account_id}:{window}", deque())
            while log and log[0] <= now - _held(window):
                log.popleft()
            logs.append(log)
        if all(slot in log for log in logs):
            for log in logs:
                log.remove(slot)  # a slot only moves later: the log stays in time order
                log.append(max(now, log[-1]) if log else now)
            return 0.0
        for log in logs:
            if slot in log:
                log.remove(slot)
        return _reserve_memory_locked(account_id, windows, now)


def _reserve_redis(account_id: int, windows: list[tuple[float, int]], now: float) -> float:
    member = uuid.uuid4().hex
    wait = float(_eval_redis(_RESERVE_LUA, account_id, windows, now, member))
    if wait == 0:
        _taken.slot = (account_id, member)
    return wait


def _eval_redis(
    script: str, account_id: int, windows: list[tuple[float, int]], now: float, member: str
) -> Any:
    from crm.redis import get_redis

    keys = [f"zapdesk:pace:{account_id}:{window}" for window, _ in windows]
    args: list[str | float | int] = [now, member]
    for window, limit in windows:
        args += [_held(window), limit]
    return get_redis().eval(script, len(keys), *keys, *args)


def reserve(account: WhatsAppAccount) -> float:
    """Take a send slot now (0.0), or return the seconds to wait before one frees up."""
    windows = limits_for(account)
    if not windows:
        return 0.0
    now = time.time()
    if current_app.config.get("REDIS_URL"):
        return _reserve_redis(account.id, windows, now)
    return _reserve_memory(account.id, windows, now)


def restamp(account: WhatsAppAccount) -> float:
    """Move the slot this thread took last for ``account`` (``reserve``) to now, right before the
    request it was taken for leaves: 0.0, or, when that slot ran out meanwhile and no other is
    free, the seconds to wait. Never lets more through than ``reserve`` does."""
    windows = limits_for(account)
    if not windows:
        return 0.0
    taken = getattr(_taken, "slot", None)
    _taken.slot = None
    now = time.time()
    if taken is None or taken[0] != account.id:
        return reserve(account)  # no slot of this number to move: take one the ordinary way
    if current_app.config.get("REDIS_URL"):
        return float(_eval_redis(_RESTAMP_LUA, account.id, windows, now, str(taken[1])))
    return _restamp_memory(account.id, windows, float(taken[1]), now)


def forget_local_windows() -> None:
    """Drop the in-process windows (tests start each case from a clean slate)."""
    with _memory_lock:
        _memory.clear()
