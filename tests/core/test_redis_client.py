"""The app's Redis client gives up on a Redis that hangs instead of holding its thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from flask import Flask

from crm import redis as app_redis


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A server that accepts connections and never answers (a hung Redis)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_a_hung_redis_fails_the_command_in_seconds(
    app: Flask, silent_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_redis, "SOCKET_TIMEOUT", 0.3)
    monkeypatch.setitem(app.config, "REDIS_URL", silent_redis)
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        app_redis.get_redis().ping()
    assert time.monotonic() - started < 5
    app_redis.get_redis().connection_pool.disconnect()
