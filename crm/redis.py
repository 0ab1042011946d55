"""One Redis client per process (thread-safe connection pool), when REDIS_URL is set."""

from __future__ import annotations

import threading

import redis
from flask import current_app

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def get_redis() -> redis.Redis:
    url = current_app.config["REDIS_URL"]
    if not url:
        raise RuntimeError("REDIS_URL is not set")
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = redis.Redis.from_url(url, health_check_interval=30)
    return client
