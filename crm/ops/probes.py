"""Quick looks at Redis for /readyz, /metrics and the system page: short timeouts, no retries.

The app's shared Redis client waits for a connection and retries, as tasks and pub/sub should;
a probe must answer "down" in about a second instead, so a dead Redis never hangs a health check.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import redis
from flask import current_app
from redis.backoff import NoBackoff
from redis.retry import Retry

_clients: dict[tuple[str, float], redis.Redis] = {}
_lock = threading.Lock()


def quick_redis() -> redis.Redis:
    """A client of REDIS_URL that gives up after PROBE_TIMEOUT_SECONDS (connecting or reading)."""
    url = current_app.config["REDIS_URL"]
    if not url:
        raise RuntimeError("REDIS_URL is not set")
    timeout = float(current_app.config.get("PROBE_TIMEOUT_SECONDS", 1.0))
    with _lock:
        client = _clients.get((url, timeout))
        if client is None:
            pool = redis.ConnectionPool.from_url(
                url,
                max_connections=8,  # probes are rare: a few connections; more fail fast, never wait
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
            )
            client = _clients[(url, timeout)] = redis.Redis(connection_pool=pool)
    return client


@dataclass(frozen=True)
class RedisMemory:
    used: int
    peak: int
    maxmemory: int  # 0: no limit
    policy: str

    @property
    def evicts(self) -> bool:
        """Redis may drop keys (queued jobs, rate windows) when full: it must be ``noeviction``."""
        return self.policy != "noeviction"


def redis_memory() -> RedisMemory:
    """``INFO memory``, raising the client's error when Redis does not answer in time."""
    info = quick_redis().info("memory")
    return RedisMemory(
        used=int(info.get("used_memory", 0)),
        peak=int(info.get("used_memory_peak", 0)),
        maxmemory=int(info.get("maxmemory", 0)),
        policy=str(info.get("maxmemory_policy", "")),
    )
