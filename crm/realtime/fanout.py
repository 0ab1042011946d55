"""Events every tab of a workspace sees alike reach a process's open sockets from one thread.

Waking one server thread per open socket for each event (1,000 threads taking the GIL in turn to
send the same frame) delayed delivery and every other request of the process. Instead, each
process has one fan-out thread: it renders the event's fragment once per language and writes it
to each socket of the workspace itself, as one websocket frame built once for all of them.

The fan-out thread never waits for one socket: a client that stops reading (a phone on a bad
network) would hold back every other tab. What a socket cannot take at once is left to that
socket's own thread, in order (``crm.realtime.tab.Tab.offer``).
Per-tab events (presence, WebQR panels for managers) go through the socket's own thread.

A broadcast's events reach only the tabs showing that broadcast, and its progress (a dispatcher
tick every second) is pushed at most once per ``PROGRESS_SECONDS`` per broadcast and process; the
last tick of a burst is held, never dropped (``Coalescer``).

An event the thread's queue cannot take (10,000 waiting) is lost here: once the queue has been
worked through, the workspace's pages are told to fetch what they show afresh (a resync,
crm/realtime/broker.py).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from flask import Flask, g

from crm.realtime.broker import EVERY_WORKSPACE, RESYNC, Event, subscribe_local, with_id
from crm.realtime.tab import STUCK_SECONDS, Tab, frame

log = logging.getLogger(__name__)

SHARED_KINDS = frozenset(
    {"message.created", "message.status", "message.deleted", "conversation.updated", "note.created", RESYNC}
)
BROADCAST_KINDS = frozenset({"broadcast.changed", "broadcast.progress"})
PROGRESS_SECONDS = 1.0


def broadcast_of(event: Event) -> int | None:
    """The broadcast a broadcast event is about (from Redis too, so checked)."""
    value = event.get("broadcast_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_tabs: dict[int, set[Tab]] = defaultdict(set)
_lock = threading.Lock()
_events: queue.Queue[tuple[int, Event]] = queue.Queue(maxsize=10_000)
_thread: threading.Thread | None = None
_behind: set[int] = set()  # workspaces with an event the full queue could not take: they resync


def register(app: Flask, tab: Tab) -> Callable[[], None]:
    """Start receiving this workspace's events on this tab; returns the function that stops it."""
    _ensure_thread(app)
    with _lock:
        _tabs[tab.workspace_id].add(tab)

    def unregister() -> None:
        with _lock:
            found = _tabs.get(tab.workspace_id)
            if found is not None:
                found.discard(tab)
                if not found:
                    del _tabs[tab.workspace_id]

    return unregister


def forget_all() -> None:
    """Drop every registration (tests: workspace ids start again after each test)."""
    with _lock:
        _tabs.clear()
        _behind.clear()
    with contextlib.suppress(queue.Empty):
        while True:
            _events.get_nowait()


def _listener(workspace_id: int, event: Event) -> None:
    """The process's one listener for every open tab: shared events go to the fan-out thread,
    per-tab ones (presence, WebQR panels) to each tab's own thread. A resync for
    ``EVERY_WORKSPACE`` goes to each workspace with a tab open here."""
    if workspace_id == EVERY_WORKSPACE:
        if event.get("type") == RESYNC:
            with _lock:
                workspaces = list(_tabs)
            for each in workspaces:
                _listener(each, event)
        return
    with _lock:
        tabs = list(_tabs.get(workspace_id, ()))
    if not tabs:
        return
    kind = str(event.get("type", ""))
    if kind in BROADCAST_KINDS:
        # Only when a tab here shows that broadcast: the other tabs have nothing to update.
        watched = broadcast_of(event)
        if watched is None or not any(t.broadcast_id == watched for t in tabs):
            return
    if kind in SHARED_KINDS or kind in BROADCAST_KINDS:
        try:
            _events.put_nowait((workspace_id, event))
        except queue.Full:  # lost here: the workspace's pages fetch what they show afresh
            with _lock:
                _behind.add(workspace_id)
        return
    for tab in tabs:
        if tab.manager if kind.startswith("webqr.") else tab.inbox:
            tab.slow(event)


def _ensure_thread(app: Flask) -> None:
    global _thread
    with _lock:
        if _thread is None or not _thread.is_alive():
            if _thread is None:
                subscribe_local(_listener)
            _thread = threading.Thread(target=_run, args=(app,), name="realtime-fanout", daemon=True)
            _thread.start()


class Coalescer:
    """At most one progress push per broadcast every ``interval`` seconds. A tick inside the
    interval is held (a newer one replaces it) and goes out when the interval ends, so the page
    always ends on the latest numbers. A status change goes out at once (it renders the progress
    too, so it replaces a held tick)."""

    def __init__(self, interval: float = PROGRESS_SECONDS) -> None:
        self.interval = interval
        self._last: dict[tuple[int, int], float] = {}
        self._held: dict[tuple[int, int], tuple[int, Event]] = {}

    def offer(self, workspace_id: int, event: Event, now: float) -> bool:
        """True: push ``event`` now; False: it is held for later (see ``due``)."""
        broadcast_id = broadcast_of(event)
        if broadcast_id is None:
            return True
        key = (workspace_id, broadcast_id)
        if (
            event.get("type") == "broadcast.progress"
            and now - self._last.get(key, -self.interval) < self.interval
        ):
            self._held[key] = (workspace_id, event)
            return False
        self._held.pop(key, None)
        self._last[key] = now
        return True

    def due(self, now: float) -> list[tuple[int, Event]]:
        """The held ticks whose interval has ended (and forget broadcasts quiet for a while)."""
        ready = [key for key in self._held if now - self._last.get(key, 0.0) >= self.interval]
        found = []
        for key in ready:
            found.append(self._held.pop(key))
            self._last[key] = now
        for key in [k for k, at in self._last.items() if now - at > 60 and k not in self._held]:
            del self._last[key]
        return found

    def next_due(self) -> float | None:
        """When the earliest held tick is due (monotonic seconds), or None."""
        if not self._held:
            return None
        return min(self._last.get(key, 0.0) + self.interval for key in self._held)


def _deliver_logged(app: Flask, workspace_id: int, event: Event) -> None:
    try:
        deliver(app, workspace_id, event)
    except Exception:
        log.exception("fan-out of a %s event failed", event.get("type"))


def _run(app: Flask) -> None:
    from crm.realtime.ws import POLL_SECONDS

    polled = time.monotonic()
    progress = Coalescer()
    while True:
        wait = POLL_SECONDS
        due = progress.next_due()
        if due is not None:
            wait = max(0.0, min(wait, due - time.monotonic()))
        try:
            workspace_id, event = _events.get(timeout=wait)
        except queue.Empty:
            pass
        else:
            kind = event.get("type")
            if kind not in BROADCAST_KINDS or progress.offer(workspace_id, event, time.monotonic()):
                _deliver_logged(app, workspace_id, event)
        for workspace_id, event in progress.due(time.monotonic()):
            _deliver_logged(app, workspace_id, event)
        if _behind:
            _queue_resyncs()
        if time.monotonic() - polled >= POLL_SECONDS:
            polled = time.monotonic()
            _poll_webqr(app)
            _cut_off_stuck(polled)


def _queue_resyncs() -> None:
    """A resync for each workspace whose event the full queue lost, queued after what waits there
    (as room is made): its pages fetch what they show once they have had the rest."""
    with _lock:
        behind = sorted(_behind)
    for workspace_id in behind:
        try:
            _events.put_nowait((workspace_id, with_id({"type": RESYNC})))
        except queue.Full:
            return
        with _lock:
            _behind.discard(workspace_id)


def _cut_off_stuck(now: float) -> None:
    """Sockets whose own thread has waited too long for its client are cut off (``Tab.stuck``):
    that thread cannot ping or see the session end while it waits."""
    with _lock:
        tabs = [tab for group in _tabs.values() for tab in group]
    for tab in tabs:
        if tab.stuck(now):
            log.info("cut off a websocket client that took no frame for %.0f s", STUCK_SECONDS)
            tab.drop()


def _poll_webqr(app: Flask) -> None:
    """WebQR state written without a published event (the embedded gateway child): looked up for
    the workspaces whose managers have a tab open here, by this one thread for all of them."""
    from crm.extensions import db
    from crm.realtime.ws import poll_webqr_states

    with _lock:
        workspaces = [w for w, tabs in _tabs.items() if any(t.manager for t in tabs)]
    for workspace_id in workspaces:
        with app.app_context():
            try:
                poll_webqr_states(workspace_id)
            except Exception:
                log.warning("WebQR state poll failed", exc_info=True)
            finally:
                db.session.remove()


def _shows(tab: Tab, event: Event) -> bool:
    if event.get("type") == RESYNC:  # every page fetches what it shows
        return True
    if event.get("type") in BROADCAST_KINDS:
        return tab.broadcast_id is not None and tab.broadcast_id == broadcast_of(event)
    return tab.inbox


def deliver(app: Flask, workspace_id: int, event: Event) -> int:
    """Render ``event`` once per language and write it to every tab of the workspace; returns how
    many tabs it was written to, or left in order for their own thread to write."""
    with _lock:
        # Only pages that show what the event updates: elsewhere its fragments would find nothing
        # to replace (the inbox, or the page of the broadcast it is about).
        tabs = [
            t for t in _tabs.get(workspace_id, ()) if _shows(t, event) and getattr(t.ws, "connected", True)
        ]
    by_locale: dict[str, list[Tab]] = defaultdict(list)
    for tab in tabs:
        by_locale[tab.locale].append(tab)
    sent = 0
    for locale, group in by_locale.items():
        html = resync_fragment() if event.get("type") == RESYNC else render(app, workspace_id, event, locale)
        if not html:
            continue
        built = frame(html)
        for tab in group:
            try:
                sent += tab.offer(html, built)
            except Exception:  # closed under us: its own thread sees it and cleans up
                log.debug("fan-out to a closing socket failed", exc_info=True)
    return sent


RESYNC_PAGES_A_SECOND = 25  # pages of a process asked to refetch at once are spread to about this


def resync_fragment() -> str:
    """The live state again, as a socket's first frame says it (crm/realtime/ws.py, LIVE), marked
    so that the page fetches what it shows afresh (static/js/app.js) at a moment of its own within
    the given seconds: every page of a process may be told at once (Redis came back), and each
    refetch is a list and a thread."""
    with _lock:
        pages = sum(len(tabs) for tabs in _tabs.values())
    within = min(60, max(2, pages // RESYNC_PAGES_A_SECOND))
    from crm.realtime.ws import LIVE

    return LIVE.replace(" hidden>", f' data-resync data-resync-within="{within}" hidden>')


def render(app: Flask, workspace_id: int, event: Event, locale: str) -> str | None:
    """The event's fragment in ``locale`` and the workspace's time zone."""
    from flask_babel import force_locale

    from crm.extensions import db
    from crm.realtime.fragments import render_event

    with app.test_request_context("/ws"), force_locale(locale):
        g.workspace_id = workspace_id
        try:
            return render_event(workspace_id, event, manager=False, user_id=0)
        finally:
            db.session.remove()
