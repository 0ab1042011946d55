"""One websocket per browser tab: workspace events arrive as HTMX out-of-band fragments.

Authenticated by the session cookie, checked again every ``RECHECK_SECONDS`` (a revoked or
expired session's socket is closed). Events come from the in-process broker, and in scaled mode
from Redis pub/sub too. No database session stays open while the socket waits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, g, request, session
from flask_babel import get_locale
from flask_login import current_user
from simple_websocket import ConnectionClosed
from sqlalchemy import select

from crm.auth.models import Membership
from crm.db import utcnow
from crm.errors import NotFound
from crm.extensions import db, sock
from crm.realtime import fanout, presence
from crm.realtime.broker import Event, deliver_local, ensure_relay, publish, with_id
from crm.realtime.fragments import render_for_socket
from crm.realtime.tab import Tab, direct
from crm.tenancy import get_scoped
from crm.whatsapp.models import WebQRSession

log = logging.getLogger(__name__)

RECHECK_SECONDS = 30.0
POLL_SECONDS = 2.0
# A ping every PING_SECONDS from the socket's own thread (not the websocket library's reader
# thread, whose writes would bypass the tab's lock): a client that has not answered the last one
# is gone, and its socket is cut off. Pings also keep proxies from closing a quiet socket.
PING_SECONDS = 25.0


def changed_webqr_sessions(workspace_id: int, since: datetime) -> tuple[list[int], datetime]:
    """WebQR sessions of the workspace whose state changed after ``since``, and the new mark."""
    rows = db.session.execute(
        select(WebQRSession.account_id, WebQRSession.updated_at).where(
            WebQRSession.workspace_id == workspace_id, WebQRSession.updated_at > since
        )
    ).all()
    mark = max([since, *(r.updated_at for r in rows)])
    return [r.account_id for r in rows], mark


def _from_page(ws: Any) -> list[dict[str, Any]] | None:
    """What the page said since the last look (which conversation it shows), without waiting:
    the websocket library buffers it. None when the socket is closed."""
    said: list[dict[str, Any]] = []
    while True:
        try:
            data = ws.receive(timeout=0)
        except Exception:  # closed
            return None
        if data is None:
            return said
        if isinstance(data, str) and len(data) < 4096:
            with contextlib.suppress(ValueError):
                message = json.loads(data)
                if isinstance(message, dict):
                    said.append(message)


def _viewing(workspace_id: int, message: dict[str, Any]) -> int | None:
    """The conversation a tab shows, if it is one of this workspace's."""
    from crm.inbox.models import Conversation
    from crm.params import parse_id

    conversation_id = parse_id(message.get("viewing"))
    if conversation_id is None:
        return None
    try:
        return get_scoped(Conversation, workspace_id, conversation_id).id
    except NotFound:
        return None


_webqr_lock = threading.Lock()
_webqr_marks: dict[int, tuple[float, datetime]] = {}  # workspace: (last poll, changes seen up to)


def poll_webqr_states(workspace_id: int) -> None:
    """WebQR state written by another process without Redis (the embedded gateway child), or
    lost by pub/sub: the state rows are the truth. At most one query per workspace every
    ``POLL_SECONDS`` in this process, whatever the number of open tabs; what changed reaches
    every tab of the workspace here."""
    now = time.monotonic()
    with _webqr_lock:
        last, mark = _webqr_marks.get(workspace_id, (0.0, utcnow()))
        if now - last < POLL_SECONDS:
            return
        _webqr_marks[workspace_id] = (now, mark)
    changed, new_mark = changed_webqr_sessions(workspace_id, mark)
    db.session.remove()
    with _webqr_lock:
        _, current = _webqr_marks[workspace_id]
        _webqr_marks[workspace_id] = (now, max(current, new_mark))
    for account_id in changed:
        deliver_local(workspace_id, with_id({"type": "webqr.state", "account_id": account_id}))


def _watched_broadcast(workspace_id: int, page: str, raw: str | None) -> int | None:
    """The broadcast a progress page shows, if it is one of this workspace's."""
    from crm.broadcasts.models import Broadcast
    from crm.params import parse_id

    broadcast_id = parse_id(raw) if page == "broadcasts.detail" else None
    if broadcast_id is None:
        return None
    try:
        return get_scoped(Broadcast, workspace_id, broadcast_id).id
    except NotFound:
        return None


def _since(raw: str | None) -> datetime:
    """When the page was rendered: changes after it reach the page even if they happened before
    the socket opened. Bounded to the last minute; anything odd means now."""
    now = utcnow()
    try:
        moment = datetime.fromisoformat(raw or "")
    except ValueError:
        return now
    if moment.tzinfo is None or not now - timedelta(minutes=1) <= moment <= now:
        return now
    return moment


def decline_compression() -> None:
    """Before a request: sockets send their frames uncompressed, whatever the browser offers.

    The websocket library accepts permessage-deflate when asked (every browser asks), and then
    keeps a zlib stream per socket: the fan-out thread compressed each event once for each open
    tab, three times the CPU per tab, and at 1,000 tabs delivery p99 went past 100 ms (bench/fanout.py).
    The frames are HTML fragments of a few KB. Node's ws server leaves compression off by default
    for the same reason."""
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


# How many sockets a process opens at once. When every open tab reconnects at once (after a
# restart), hundreds of threads opening their sockets contended for the interpreter lock and
# each opening took several times its CPU: 1,000 sockets took 4.6-6.7 s of the web processes'
# CPU to open, 3.5-4.2 s four at a time (bench/fanout.py). The others wait for their turn asleep;
# a turn not come within OPENING_WAIT_SECONDS (a stuck opening) is not waited for any longer.
OPENING_AT_ONCE = 4
OPENING_WAIT_SECONDS = 5.0
_opening = threading.BoundedSemaphore(OPENING_AT_ONCE)


def take_opening_turn() -> None:
    """Before a request: a socket's opening waits for its turn (see OPENING_AT_ONCE)."""
    rule = request.url_rule
    if rule is None or not rule.websocket:  # other requests, and whatever routing will refuse
        return
    turns = _opening
    if turns.acquire(timeout=OPENING_WAIT_SECONDS):
        g.opening_turn = turns  # given back to the semaphore it was taken from
    else:
        log.warning("a socket opened without its turn: openings stuck for %.0f s", OPENING_WAIT_SECONDS)


def end_opening_turn(_error: BaseException | None = None) -> None:
    """Once the socket is live, or the request ended without it (teardown): the next one's turn."""
    turns = g.pop("opening_turn", None)
    if turns is not None:
        turns.release()


# The socket's first frame, once its tab is registered: the page shows the connection as live
# (templates/shell.html); when the socket drops, the page says it is reconnecting. Before closing
# a socket for good (no session), the server says so: the browser may not see the close's code
# (it reports a closed socket as dropped), and the page should offer a reload, not a reconnect.
LIVE = '<span id="live-state" hx-swap-oob="true" data-state="on" hidden></span>'
CLOSED = '<span id="live-state" hx-swap-oob="true" data-state="closed" hidden></span>'


@sock.route("/ws")
def events_socket(ws: Any) -> None:
    origin = request.headers.get("Origin")
    if origin and urlsplit(origin).hostname != urlsplit(f"//{request.host}").hostname:
        # Another site's page opening a socket with our cookies (cross-site websocket hijacking).
        # Host names are compared: cookies are not kept apart by port either.
        ws.close(reason=1008, message="cross-site")
        return
    if not current_user.is_authenticated:
        with contextlib.suppress(ConnectionClosed, OSError):  # the page may be gone already
            ws.send(CLOSED)
        ws.close(reason=1008, message="sign in first")
        return
    from crm.auth.services import load_session

    workspace_id: int = g.workspace_id
    token = session.get("sid")
    # What the page shows decides what it is sent (the page's endpoint, from the shell).
    page = request.args.get("page", "inbox.index")
    manager = g.membership.role_enum.manages_team and page.startswith("settings.")
    membership_id = g.membership.id
    user_id: int = current_user.id
    socket_id = uuid.uuid4().hex[:12]
    viewing: int | None = None
    # Per-tab events waiting for this thread, the latest per thing they are about: each renders
    # what is true when it is rendered, so a newer one makes an older one of the same key moot.
    waiting: dict[tuple[object, ...], Event] = {}
    waiting_lock = threading.Lock()

    # The thread sleeps until there is something to do: an event for this tab, or the page saying
    # something (the websocket library's own reader thread wakes it), or a periodic check.
    wake = threading.Event()
    heard = ws.event.set

    def page_spoke() -> None:
        heard()
        wake.set()

    ws.event.set = page_spoke

    def to_this_thread(event: Event) -> None:
        key = (
            event.get("type"),
            event.get("conversation_id"),
            event.get("account_id"),
            event.get("message_id"),
        )
        with waiting_lock:
            waiting.pop(key, None)
            waiting[key] = event  # in the order of their latest
        wake.set()

    # Events every tab sees alike are written by the process's fan-out thread (what a stalled
    # client could not take at once is left to this thread: tab.flush); the others come to this
    # thread through to_this_thread.
    tab = Tab(
        workspace_id,
        str(get_locale() or "en"),
        ws,
        slow=to_this_thread,
        manager=manager,
        inbox=page.startswith("inbox."),
        broadcast_id=_watched_broadcast(workspace_id, page, request.args.get("broadcast")),
        # No extension offered (none agreed), and a socket the fan-out thread can write to directly.
        plain="HTTP_SEC_WEBSOCKET_EXTENSIONS" not in request.environ and direct(ws.sock),
        wake=wake.set,
    )
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    unregister = fanout.register(app, tab)
    # From here on the tab is registered: whatever happens, the finally below unregisters it.
    try:
        ensure_relay()  # events of the other web processes (scaled mode)
        if manager:  # what changed between the page's rendering and now
            missed, mark = changed_webqr_sessions(workspace_id, _since(request.args.get("since")))
            for account_id in missed:
                to_this_thread({"type": "webqr.state", "account_id": account_id})
            with _webqr_lock:  # the polls go on from here: nothing changed after this is missed
                _webqr_marks.setdefault(workspace_id, (0.0, mark))
        db.session.remove()
        presence.touch(workspace_id, user_id, socket_id, None)
        checked = touched = time.monotonic()

        def fresh_context() -> None:
            # Fresh rows for the templates' shared context: the ones loaded at connect time were
            # released with their database session.
            g.membership = db.session.get(Membership, membership_id)

        idle = min(presence.REFRESH_SECONDS, RECHECK_SECONDS)
        # From here on nothing published in this process is missed (other processes' events: once
        # the relay is subscribed, and it makes the page refetch then).
        tab.send(LIVE)
        end_opening_turn()
        pinged = time.monotonic()
        while not tab.dropped:
            wake.wait(max(0.0, min(idle, pinged + PING_SECONDS - time.monotonic())))
            wake.clear()
            tab.flush()  # what the fan-out thread could not write at once, first
            with waiting_lock:
                events = list(waiting.values())
                waiting.clear()
            said = _from_page(ws)
            if said is None:
                return
            for message in said:
                shown = _viewing(workspace_id, message)
                db.session.remove()
                if shown != viewing:
                    if viewing is not None:
                        presence.stop_viewing(workspace_id, user_id, socket_id, viewing)
                        publish(workspace_id, {"type": "presence.changed", "conversation_id": viewing})
                    viewing = shown
                    presence.touch(workspace_id, user_id, socket_id, viewing)
                    if viewing is not None:
                        publish(workspace_id, {"type": "presence.changed", "conversation_id": viewing})
            if time.monotonic() - touched > presence.REFRESH_SECONDS:
                presence.touch(workspace_id, user_id, socket_id, viewing)
                touched = time.monotonic()
            if time.monotonic() - checked > RECHECK_SECONDS:
                alive = isinstance(token, str) and load_session(token) is not None
                db.session.remove()
                if not alive:
                    tab.send(CLOSED)
                    tab.close(1008, "session ended")
                    return
                checked = time.monotonic()
            if time.monotonic() - pinged >= PING_SECONDS:
                if not tab.ping():
                    tab.drop()
                    return
                pinged = time.monotonic()
            for event in events:
                try:
                    html = render_for_socket(
                        workspace_id, event, manager=manager, user_id=user_id, prepare=fresh_context
                    )
                finally:
                    db.session.remove()
                if html:
                    tab.send(html)
    except OSError:  # the connection broke (or was cut off): the page reconnects (no close frame)
        log.debug("socket ended by an error", exc_info=True)
        tab.drop()
    finally:
        unregister()
        tab.finish()
        presence.leave(workspace_id, user_id, socket_id, viewing)
        if viewing is not None:
            publish(workspace_id, {"type": "presence.changed", "conversation_id": viewing})
