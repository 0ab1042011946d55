"""One Redis client per process (thread-safe connection pool), when REDIS_URL is set."""

from __future__ import annotations

import threading

import redis
from flask import current_app

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()
# No command on this client blocks by design (the realtime relay and the task queue have their own
# connections), so an answer that takes longer means Redis hangs: the command fails, as when Redis
# is down, instead of holding its thread (a page, a send) for ever.
SOCKET_TIMEOUT = 5.0  # seconds


def get_redis() -> redis.Redis:
    url = current_app.config["REDIS_URL"]
    if not url:
        raise RuntimeError("REDIS_URL is not set")
    with _lock:
        client = _clients.get(url)
        if client is None:
            # A blocking pool: with more threads than connections (every open websocket is a
            # thread), a thread waits its turn instead of failing with "Too many connections".
            pool = redis.BlockingConnectionPool.from_url(
                url,
                max_connections=current_app.config["REDIS_MAX_CONNECTIONS"],
                timeout=10,
                health_check_interval=30,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=SOCKET_TIMEOUT,
            )
            client = _clients[url] = redis.Redis(connection_pool=pool)
    return client
