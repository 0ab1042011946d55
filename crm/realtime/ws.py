"""One websocket per browser tab: workspace events arrive as HTMX out-of-band fragments.

Authenticated by the session cookie, checked again every ``RECHECK_SECONDS`` (a revoked or
expired session's socket is closed). Events come from the in-process broker, and in scaled mode
from Redis pub/sub too. No database session stays open while the socket waits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from typing import Any

from flask import current_app, g, session
from flask_login import current_user

from crm.auth.models import Membership
from crm.extensions import db, sock
from crm.realtime.broker import Event, channel, subscribe_local
from crm.realtime.fragments import render_event

log = logging.getLogger(__name__)

RECHECK_SECONDS = 30.0
WAIT_SECONDS = 5.0


def _redis_listener(workspace_id: int, inbox: queue.Queue[Event], stop: threading.Event) -> None:
    from crm.redis import get_redis

    pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel(workspace_id))
    try:
        while not stop.is_set():
            message = pubsub.get_message(timeout=1.0)
            if message and isinstance(message.get("data"), bytes | str):
                with contextlib.suppress(ValueError, queue.Full):  # lossy by design
                    inbox.put_nowait(json.loads(message["data"]))
    finally:
        pubsub.close()


@sock.route("/ws")
def events_socket(ws: Any) -> None:
    if not current_user.is_authenticated:
        ws.close(reason=1008, message="sign in first")
        return
    from crm.auth.services import load_session

    workspace_id: int = g.workspace_id
    token = session.get("sid")
    manager = g.membership.role_enum.manages_team
    membership_id = g.membership.id
    inbox: queue.Queue[Event] = queue.Queue(maxsize=1000)
    stop = threading.Event()

    def local(ws_id: int, event: Event) -> None:
        if ws_id == workspace_id:
            with contextlib.suppress(queue.Full):  # lossy by design: pages catch up on reconnect
                inbox.put_nowait(event)

    unsubscribe = subscribe_local(local)
    if current_app.config.get("REDIS_URL"):
        threading.Thread(target=_redis_listener, args=(workspace_id, inbox, stop), daemon=True).start()
    db.session.remove()
    checked = time.monotonic()
    try:
        while True:
            try:
                event = inbox.get(timeout=WAIT_SECONDS)
            except queue.Empty:
                event = None
            if time.monotonic() - checked > RECHECK_SECONDS:
                alive = isinstance(token, str) and load_session(token) is not None
                db.session.remove()
                if not alive:
                    ws.close(reason=1008, message="session ended")
                    return
                checked = time.monotonic()
            if event is None:
                continue
            try:
                # Fresh rows for the templates' shared context: the ones loaded at connect time
                # were released with their database session.
                g.membership = db.session.get(Membership, membership_id)
                html = render_event(workspace_id, event, manager=manager)
            finally:
                db.session.remove()
            if html:
                ws.send(html)
    finally:
        stop.set()
        unsubscribe()
