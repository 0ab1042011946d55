"""Publishing events to open pages: Redis pub/sub across processes, in-process otherwise.

Pub/sub is lossy by design; pages that reconnect fetch what they missed from the database.
Events are published only after the commit that made them true (see ``publish_after_commit``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from flask import current_app

from crm.db import after_commit

log = logging.getLogger(__name__)

Event = dict[str, Any]
Listener = Callable[[int, Event], None]

_listeners: list[Listener] = []
_lock = threading.Lock()


def channel(workspace_id: int) -> str:
    return f"zapdesk:workspace:{workspace_id}"


def subscribe_local(listener: Listener) -> Callable[[], None]:
    """Listen to every event published by this process; returns the function that unsubscribes."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def publish(workspace_id: int, event: Event) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(workspace_id, event)
        except Exception:
            log.exception("realtime listener failed")
    redis_url = current_app.config.get("REDIS_URL")
    if redis_url:
        from crm.redis import get_redis

        try:
            get_redis().publish(channel(workspace_id), json.dumps(event, default=str))
        except Exception:  # lossy by design: pages catch up from the database
            log.warning("realtime publish to Redis failed", exc_info=True)


def publish_after_commit(workspace_id: int, event: Event) -> None:
    after_commit(lambda: publish(workspace_id, event))
