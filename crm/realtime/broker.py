"""Publishing events to open pages: Redis pub/sub across processes, in-process otherwise.

Every event reaches this process's listeners (the open websockets) directly. With Redis it is
also published on the workspace's channel, and each web process runs one relay thread that
subscribes to every workspace channel and hands other processes' events to its own listeners:
one Redis connection per process, however many sockets are open.

Pub/sub is lossy by design; pages that reconnect fetch what they missed from the database. When
events may have been lost without any socket dropping, the pages that may have missed them are
told to fetch what they show afresh (a ``RESYNC`` event):

- every open page of this process, each time the relay is subscribed: at first (the pages opened
  before it missed other processes' events) and again after Redis went away from it;
- a workspace's pages in every process, once Redis takes a publish again after missing one of
  that workspace's events (at the next publish, or a retry every ``RESEND_SECONDS``).
Events are published only after the commit that made them true (see ``publish_after_commit``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from flask import current_app

from crm.db import after_commit

log = logging.getLogger(__name__)

Event = dict[str, Any]
Listener = Callable[[int, Event], None]

_listeners: list[Listener] = []
_lock = threading.Lock()
_ORIGIN_BASE = uuid.uuid4().hex


def origin() -> str:
    """This process (its own events come back from Redis and are skipped); by pid too, so
    processes forked after import (gunicorn --preload) don't share it."""
    return f"{_ORIGIN_BASE}-{os.getpid()}"


_relay: threading.Thread | None = None
RESYNC = "resync"  # the pages may have missed events: they fetch what they show afresh
EVERY_WORKSPACE = 0  # a resync's workspace for every open page of this process (ids start at 1)
RELAY_NAME = "zapdesk-relay-{db}"  # the relay's Redis connection, as CLIENT LIST shows it
RESEND_SECONDS = 5.0
_unsent: set[int] = set()  # workspaces with an event Redis did not take from this process
_resender: threading.Thread | None = None


@functools.cache
def database(redis_url: str) -> int:
    from redis.connection import parse_url

    return int(parse_url(redis_url).get("db") or 0)


def channel_prefix(redis_url: str) -> str:
    """Pub/sub channels belong to the whole Redis server, whatever the database: two deployments
    sharing a server on two databases (staging and production) must not hear each other."""
    return f"zapdesk:{database(redis_url)}:workspace:"


def channel(workspace_id: int, redis_url: str) -> str:
    return f"{channel_prefix(redis_url)}{workspace_id}"


def with_id(event: Event) -> Event:
    """Each event has its own id, so the fragment rendered for it can be shared by every socket."""
    return event if event.get("eid") else {**event, "eid": uuid.uuid4().hex}


def deliver_local(workspace_id: int, event: Event) -> None:
    """To this process's listeners only (what other processes learn by themselves)."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(workspace_id, event)
        except Exception:
            log.exception("realtime listener failed")


def relayed(message: dict[str, Any], prefix: str) -> tuple[int, Event] | None:
    """A pub/sub message from another process as (workspace id, event); None for anything else."""
    name = message.get("channel")
    name = name.decode() if isinstance(name, bytes) else str(name or "")
    if not name.startswith(prefix):
        return None
    workspace = name.removeprefix(prefix)
    try:
        body = json.loads(message.get("data") or b"")
    except (TypeError, ValueError):
        return None
    if (
        not workspace.isdecimal()
        or int(workspace) < 1
        or not isinstance(body, dict)
        or body.get("origin") == origin()
    ):
        return None
    event = body.get("event")
    return (int(workspace), event) if isinstance(event, dict) else None


def resync_local(workspace_id: int = EVERY_WORKSPACE) -> None:
    """This process's open pages (of one workspace, or all) fetch what they show afresh."""
    deliver_local(workspace_id, with_id({"type": RESYNC}))


def _relay_loop(redis_url: str) -> None:
    import redis

    name = RELAY_NAME.format(db=database(redis_url))
    client = redis.Redis.from_url(redis_url, health_check_interval=30, client_name=name)
    prefix = channel_prefix(redis_url)
    pause = 1.0
    while True:
        subscribed_at: float | None = None
        pubsub = client.pubsub()
        try:
            pubsub.psubscribe(f"{prefix}*")
            while True:
                message = pubsub.get_message(timeout=5.0)
                if not message:
                    continue
                if message.get("type") == "psubscribe":
                    # Subscribed: at first, or again on a new connection (redis-py subscribes
                    # again by itself when it reconnects). What the pages missed before is in the
                    # database: they fetch it.
                    subscribed_at = time.monotonic()
                    resync_local()
                    continue
                found = relayed(message, prefix)
                if found is not None:
                    deliver_local(*found)
        except Exception:  # Redis went away: pages catch up once subscribed again (a resync)
            if subscribed_at is not None and time.monotonic() - subscribed_at > 60:
                pause = 1.0  # it had stayed up: not a Redis that keeps dropping the relay
            log.warning("realtime relay lost Redis; retrying in %.0f s", pause, exc_info=True)
            time.sleep(pause)
            pause = min(pause * 2, 30.0)
        finally:
            pubsub.close()


def ensure_relay() -> None:
    """Start this process's Redis relay once (no-op without Redis)."""
    global _relay
    redis_url = current_app.config.get("REDIS_URL")
    if not redis_url:
        return
    with _lock:
        if _relay is None or not _relay.is_alive():
            _relay = threading.Thread(
                target=_relay_loop, args=(redis_url,), name="realtime-relay", daemon=True
            )
            _relay.start()


def subscribe_local(listener: Listener) -> Callable[[], None]:
    """Listen to every event published by this process; returns the function that unsubscribes."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def _body(event: Event) -> str:
    return json.dumps({"origin": origin(), "event": event}, default=str)


def publish(workspace_id: int, event: Event) -> None:
    event = with_id(event)
    deliver_local(workspace_id, event)
    redis_url = current_app.config.get("REDIS_URL")
    if redis_url:
        from crm.redis import get_redis

        try:
            client = get_redis()
            _publish_resyncs(client, redis_url)
            client.publish(channel(workspace_id, redis_url), _body(event))
        except Exception:  # the other processes' pages of the workspace are told once Redis is back
            _missed(workspace_id, redis_url)
            log.warning("realtime publish to Redis failed", exc_info=True)


def _publish_resyncs(client: Any, redis_url: str) -> None:
    """A resync to the other processes' pages of each workspace with an event Redis missed."""
    with _lock:
        missed = set(_unsent)
        _unsent.clear()
    try:
        for workspace_id in sorted(missed):
            client.publish(channel(workspace_id, redis_url), _body(with_id({"type": RESYNC})))
    except Exception:
        with _lock:
            _unsent.update(missed)
        raise


def _missed(workspace_id: int, redis_url: str) -> None:
    global _resender
    with _lock:
        _unsent.add(workspace_id)
        if _resender is None or not _resender.is_alive():  # this process may publish nothing more
            _resender = threading.Thread(
                target=_resend_loop, args=(redis_url,), name="realtime-resend", daemon=True
            )
            _resender.start()


def _resend_loop(redis_url: str) -> None:
    """Every ``RESEND_SECONDS`` until Redis takes them, the resyncs ``publish`` could not send."""
    global _resender
    import redis

    from crm.redis import SOCKET_TIMEOUT

    client = redis.Redis.from_url(
        redis_url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
    )
    while True:
        time.sleep(RESEND_SECONDS)
        with _lock:
            if not _unsent:
                _resender = None
                return
        try:
            _publish_resyncs(client, redis_url)
        except Exception:
            log.debug("realtime resyncs not sent yet", exc_info=True)


def forget_unsent() -> None:
    """Tests: no workspace left owing a resync from an earlier test."""
    with _lock:
        _unsent.clear()


def publish_after_commit(workspace_id: int, event: Event) -> None:
    after_commit(lambda: publish(workspace_id, event))
