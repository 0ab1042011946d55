"""One rate limiter per number: never more sends than allowed over any 1 s and any 60 s window
(a slot of the 1 s window is held a little longer, so the provider's count at arrival agrees: see
``ARRIVAL_SLACK``).

The windows are trimmed by time on every call; their Redis keys outlive an idle number by a few
minutes only (the limiter's time is the caller's clock, so a key never expires under a window
that is still open).

Sliding-window logs: in Redis (shared by every worker) in scaled mode, in memory in embedded mode
(one process). ``reserve`` either takes a slot now (returns 0) or says how long to wait.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque

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

# The provider counts a send when it arrives; we count it when the slot is taken. Between the two
# lie a commit, the HTTP call and the network, and that delay varies: 3 ms to several hundred,
# p99 about 100 ms, on the 2-core bench machine (bench/broadcast.py). A 1 s window counted at
# exactly Meta's limit lets a slot be taken again the moment it frees, so a send delayed a little
# less than the one it replaces lands 81 in Meta's window: 130429, which pauses the number for
# 5 s (about 400 sends). A slot of a short window is therefore held this much longer than the
# window: 80 per 1.1 s, at most 72.7/s sustained (bursts of 80 still go out at once). Longer
# windows (60 s) keep their exact length: the same delay is a negligible share of them.
ARRIVAL_SLACK = 0.1
SHORT_WINDOW = 1.0


def _held(window: float) -> float:
    """How long a slot of ``window`` stays taken (the keys keep the window's own name)."""
    return window + ARRIVAL_SLACK if window <= SHORT_WINDOW else window


_memory: dict[str, deque[float]] = {}
_memory_lock = threading.Lock()


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
        return 0.0


def _reserve_redis(account_id: int, windows: list[tuple[float, int]], now: float) -> float:
    from crm.redis import get_redis

    keys = [f"zapdesk:pace:{account_id}:{window}" for window, _ in windows]
    args: list[str | float | int] = [now, uuid.uuid4().hex]
    for window, limit in windows:
        args += [_held(window), limit]
    client = get_redis()
    wait = client.eval(_RESERVE_LUA, len(keys), *keys, *args)
    return float(wait)


def reserve(account: WhatsAppAccount) -> float:
    """Take a send slot now (0.0), or return the seconds to wait before one frees up."""
    windows = limits_for(account)
    if not windows:
        return 0.0
    now = time.time()
    if current_app.config.get("REDIS_URL"):
        return _reserve_redis(account.id, windows, now)
    return _reserve_memory(account.id, windows, now)


def forget_local_windows() -> None:
    """Drop the in-process windows (tests start each case from a clean slate)."""
    with _memory_lock:
        _memory.clear()
