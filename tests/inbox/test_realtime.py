"""The realtime broker: one Redis relay per process carries other processes' events."""

from __future__ import annotations

import json
import os
import queue
import re
import time
from typing import Any

import pytest
import redis
from flask import Flask

from crm.realtime import broker
from tests import factories
from tests.services import require_service


def test_relayed_reads_other_processes_events_and_skips_its_own() -> None:
    event = {"type": "message.created", "message_id": 5}
    theirs = {"channel": b"zapdesk:workspace:7", "data": json.dumps({"origin": "elsewhere", "event": event})}
    assert broker.relayed(theirs) == (7, event)
    mine = {
        "channel": b"zapdesk:workspace:7",
        "data": json.dumps({"origin": broker.origin(), "event": event}),
    }
    assert broker.relayed(mine) is None  # delivered locally already, when it was published
    for junk in (
        {"channel": b"zapdesk:workspace:x", "data": theirs["data"]},
        {"channel": b"zapdesk:workspace:7", "data": b"not json"},
        {"channel": b"zapdesk:workspace:7", "data": json.dumps({"origin": "o", "event": [1]})},
        {"channel": None, "data": None},
    ):
        assert broker.relayed(junk) is None


def test_the_relay_hands_other_processes_events_to_this_process(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        require_service("TEST_REDIS_URL is not set: the Redis relay is not checked")
    monkeypatch.setitem(app.config, "REDIS_URL", url)
    received: queue.Queue[tuple[int, dict[str, object]]] = queue.Queue()
    unsubscribe = broker.subscribe_local(lambda ws, event: received.put((ws, event)))
    try:
        broker.ensure_relay()
        client = redis.Redis.from_url(url)
        event = {"type": "conversation.updated", "conversation_id": 3}
        deadline = time.monotonic() + 5
        got = None
        while got is None and time.monotonic() < deadline:  # the relay subscribes asynchronously
            client.publish(broker.channel(42), json.dumps({"origin": "another-process", "event": event}))
            try:
                got = received.get(timeout=0.2)
            except queue.Empty:
                continue
        assert got == (42, event)
        broker.publish(42, {"type": "note.created", "note_id": 1})  # ours: delivered exactly once
        workspace, ours = received.get(timeout=1)
        assert workspace == 42 and ours["note_id"] == 1 and ours["eid"]
        time.sleep(0.3)
        leftovers = []
        while not received.empty():
            leftovers.append(received.get())
        assert ours not in [e for _ws, e in leftovers]
    finally:
        unsubscribe()


def signed_in_cookie(live_server: str, person: factories.Person) -> str:
    """The Cookie header of a browser that signed in as ``person`` on the live server."""
    import httpx

    with httpx.Client(base_url=live_server) as browser:
        page = browser.get("/login").text
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
        assert token is not None
        form = {"email": person.email, "password": factories.PASSWORD, "csrf_token": token.group(1)}
        assert browser.post("/login", data=form).status_code == 302
        return "; ".join(f"{name}={value}" for name, value in browser.cookies.items())


def live(socket: Any) -> None:
    """A socket's first frame: its tab is registered, the page shows itself live."""
    from crm.realtime.ws import LIVE

    assert socket.receive(timeout=5) == LIVE


def test_another_sites_page_cannot_open_the_socket_with_our_cookies(
    live_server: str, owner: factories.Person
) -> None:
    import simple_websocket

    cookie = signed_in_cookie(live_server, owner)
    url = live_server.replace("http://", "ws://") + "/ws"
    same = simple_websocket.Client(url, headers={"Cookie": cookie, "Origin": live_server})
    try:
        live(same)
        assert same.receive(timeout=1.5) is None  # open and quiet: nothing happened yet
    finally:
        same.close()
    foreign = simple_websocket.Client(url, headers={"Cookie": cookie, "Origin": "https://evil.example"})
    with pytest.raises(simple_websocket.ConnectionClosed):
        foreign.receive(timeout=3)


def counted_renders(monkeypatch: pytest.MonkeyPatch, eids: set[str]) -> list[str]:
    """The language of each rendering of these events (the process's fan-out thread may render
    other tests' events meanwhile: those are not counted)."""
    from flask_babel import get_locale

    from crm.realtime import fragments

    renders: list[str] = []
    real = fragments.render_event

    def counting(workspace_id: int, event: dict[str, object], **kwargs: object) -> str | None:
        if event.get("eid") in eids:
            renders.append(str(get_locale()))
        return real(workspace_id, event, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fragments, "render_event", counting)
    return renders


def test_a_shared_fragment_is_rendered_once_per_event_and_language(
    app: Flask, owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm.realtime import fragments

    conversation_id = factories.conversation(owner)
    calls = counted_renders(monkeypatch, {"e1", "e2"})
    event = {"type": "conversation.updated", "conversation_id": conversation_id, "eid": "e1"}
    with app.test_request_context("/ws"):
        first = fragments.render_for_socket(owner.workspace_id, event, manager=True, user_id=owner.user_id)
        for _ in range(50):  # 50 more open tabs
            assert fragments.render_for_socket(owner.workspace_id, event, manager=False, user_id=1) == first
        assert first and len(calls) == 1
        fragments.render_for_socket(owner.workspace_id, {**event, "eid": "e2"}, manager=True, user_id=1)
        assert len(calls) == 2  # a later event, even about the same conversation, is rendered anew


class FakeSocket:
    """What the fan-out thread uses of a simple-websocket connection: ``sock`` and ``send``."""

    def __init__(self, *, stalled: bool = False) -> None:
        import socket

        self.sock, self.peer = socket.socketpair()
        self.sent: list[str] = []
        if stalled:  # the client stopped reading: the send buffer is full
            self.sock.setblocking(False)
            try:
                while True:
                    self.sock.send(b"x" * 65536)
            except BlockingIOError:
                pass

    def send(self, html: str) -> None:
        self.sent.append(html)

    def close(self) -> None:
        self.sock.close()
        self.peer.close()


def test_shared_events_are_rendered_once_per_language_and_written_by_one_thread(
    app: Flask, owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm.realtime import fanout

    conversation_id = factories.conversation(owner)
    renders = counted_renders(monkeypatch, {"x1"})
    sockets = [FakeSocket() for _ in range(4)] + [FakeSocket(stalled=True)]
    slow: list[dict[str, object]] = []
    locales = ["en", "pt_BR", "en", "pt_BR", "en"]
    tabs = [
        fanout.Tab(owner.workspace_id, locale, ws, slow=slow.append)
        for locale, ws in zip(locales, sockets, strict=True)
    ]
    other = FakeSocket()
    elsewhere = fanout.Tab(owner.workspace_id + 1, "en", other, slow=slow.append)
    stops = [fanout.register(app, tab) for tab in [*tabs, elsewhere]]
    try:
        event = {"type": "conversation.updated", "conversation_id": conversation_id, "eid": "x1"}
        assert fanout.deliver(app, owner.workspace_id, event) == 4
        assert sorted(renders) == ["en", "pt_BR"]  # once per language, not once per tab
        english, portuguese = sockets[0].sent[0], sockets[1].sent[0]
        assert sockets[2].sent == [english] and sockets[3].sent == [portuguese] and english != portuguese
        assert f"conversation-{conversation_id}" in english
        assert sockets[4].sent == [] and slow == [event]  # the stalled tab's own thread takes it
        assert other.sent == []  # another workspace's tab hears nothing
    finally:
        for stop in stops:
            stop()
        for ws in [*sockets, other]:
            ws.close()


def test_the_socket_declines_compression_a_browser_offers(live_server: str) -> None:
    """Every browser offers permessage-deflate; compressing each event for each open tab would
    cost the fan-out thread per tab, so the handshake answers without it."""
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(live_server)
    handshake = (
        f"GET /ws HTTP/1.1\r\nHost: {address.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=5) as raw:
        raw.sendall(handshake.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = raw.recv(4096)
            assert chunk, answer
            answer += chunk
    head = answer.split(b"\r\n\r\n")[0].decode().lower()
    assert head.startswith("http/1.1 101")
    assert "sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in head  # RFC 6455's example
    assert "sec-websocket-extensions" not in head


def test_an_idle_socket_holds_no_database_connection_and_closes_when_its_session_is_revoked(
    app: Flask, live_server: str, owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    import simple_websocket

    from crm.auth.models import UserSession
    from crm.auth.services import revoke_sessions_where
    from crm.extensions import db
    from crm.realtime import ws

    cookie = signed_in_cookie(live_server, owner)
    url = live_server.replace("http://", "ws://") + "/ws"
    headers = {"Cookie": cookie, "Origin": live_server}
    idle = simple_websocket.Client(url, headers=headers)
    try:
        live(idle)
        assert idle.receive(timeout=1.0) is None  # open, and nothing to say
        db.session.remove()  # this test's own connection back to the pool
        held = []
        for _ in range(10):
            held.append(db.engine.pool.checkedout())
            time.sleep(0.05)
        assert held == [0] * 10
    finally:
        idle.close()

    monkeypatch.setattr(ws, "RECHECK_SECONDS", 0.3)  # instead of every 30 s
    watched = simple_websocket.Client(url, headers=headers)
    try:
        live(watched)
        assert watched.receive(timeout=1.0) is None
        revoke_sessions_where(UserSession.user_id == owner.user_id, reason="logout")
        assert watched.receive(timeout=5) == ws.CLOSED  # the page offers a reload, not a reconnect
        with pytest.raises(simple_websocket.ConnectionClosed):
            watched.receive(timeout=5)
        assert (watched.close_reason, watched.close_message) == (1008, "session ended")
    finally:
        if watched.connected:
            watched.close()


@pytest.mark.parametrize("size", [10, 200, 70_000])  # the three lengths a frame's header can give
def test_a_frame_built_once_reads_back_as_the_text_on_any_plain_socket(size: int) -> None:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request, TextMessage

    from crm.realtime import fanout

    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="example.com", target="/ws")))
    request = next(server.events())
    assert isinstance(request, Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    html = ("<p>Olá, ação às 10h ✓</p>" * (size // 20 + 1))[:size]
    client.receive_data(fanout.frame(html) + fanout.frame(html))  # the same bytes, written twice
    texts = [event.data for event in client.events() if isinstance(event, TextMessage)]
    assert texts == [html, html]


def test_the_fanout_writes_its_built_frame_to_a_real_socket(
    app: Flask, live_server: str, owner: factories.Person
) -> None:
    """A browser offers compression; declined, its socket is plain, so the fan-out thread writes
    the frame it built once; the page reads the fragment whole, accents included."""
    import simple_websocket

    from crm.realtime import fanout

    conversation_id = factories.inbound(factories.sandbox_account(owner), name="João Conceição")
    cookie = signed_in_cookie(live_server, owner)
    url = live_server.replace("http://", "ws://") + "/ws"
    offer = "permessage-deflate; client_max_window_bits"  # as browsers offer it
    headers = {"Cookie": cookie, "Origin": live_server, "Sec-WebSocket-Extensions": offer}
    socket = simple_websocket.Client(url, headers=headers)
    try:
        live(socket)
        with fanout._lock:
            tabs = list(fanout._tabs.get(owner.workspace_id, ()))
        assert len(tabs) == 1 and tabs[0].plain
        sent: list[bytes] = []
        real_frame = fanout.frame

        def counted(html: str) -> bytes:
            sent.append(real_frame(html))
            return sent[-1]

        event = {"type": "conversation.updated", "conversation_id": conversation_id, "eid": "frame-1"}

        def library_send(html: str) -> None:
            raise AssertionError("the library built this frame again")

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(fanout, "frame", counted)
            patch.setattr(tabs[0].ws, "send", library_send)
            assert fanout.deliver(app, owner.workspace_id, event) == 1
        html = socket.receive(timeout=5)
        assert f'id="conversation-{conversation_id}"' in html and "João Conceição" in html
        assert len(sent) == 1 and sent[0].endswith(html.encode()) and len(sent[0]) - len(html.encode()) <= 4
    finally:
        socket.close()


def test_no_built_frame_goes_to_a_socket_that_is_closing() -> None:
    """As the websocket library's own send: after a close frame, sent or received, nothing more."""
    from types import SimpleNamespace

    from simple_websocket import ConnectionClosed
    from wsproto.connection import ConnectionState

    from crm.realtime import fanout

    written: list[bytes] = []
    sock = SimpleNamespace(sendall=written.append)
    for connected, state in [
        (False, ConnectionState.OPEN),
        (True, ConnectionState.LOCAL_CLOSING),
        (True, ConnectionState.REMOTE_CLOSING),
    ]:
        ws = SimpleNamespace(
            connected=connected,
            ws=SimpleNamespace(state=state),
            sock=sock,
            close_reason=1000,
            close_message="",
        )
        with pytest.raises(ConnectionClosed):
            fanout.Tab(1, "en", ws, slow=print, plain=True).send("<p>x</p>", fanout.frame("<p>x</p>"))
    ws = SimpleNamespace(connected=True, ws=SimpleNamespace(state=ConnectionState.OPEN), sock=sock)
    fanout.Tab(1, "en", ws, slow=print, plain=True).send("<p>x</p>", fanout.frame("<p>x</p>"))
    assert written == [fanout.frame("<p>x</p>")]


def test_a_socket_gives_back_its_opening_turn_once_live_or_refused(
    live_server: str, owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sockets open a few at a time (a burst of reconnecting tabs); a socket that stays open, or
    one refused, must not keep its turn, or the next tab would wait for it."""
    import threading

    import simple_websocket

    from crm.realtime import ws

    turns = threading.BoundedSemaphore(1)
    monkeypatch.setattr(ws, "_opening", turns)
    monkeypatch.setattr(ws, "OPENING_WAIT_SECONDS", 15.0)  # a turn kept would hold the next socket

    def opened(headers: dict[str, str]) -> simple_websocket.Client:
        started = time.monotonic()
        client = simple_websocket.Client(url, headers=headers)  # returns once the server answered
        assert time.monotonic() - started < 5, "the socket waited for a turn kept by another"
        return client

    url = live_server.replace("http://", "ws://") + "/ws"
    stranger = opened({"Origin": live_server})
    with pytest.raises(simple_websocket.ConnectionClosed):
        while True:
            stranger.receive(timeout=5)  # CLOSED, then the close: nobody signed in
    headers = {"Cookie": signed_in_cookie(live_server, owner), "Origin": live_server}
    first = opened(headers)
    try:
        live(first)
        second = opened(headers)  # while the first stays open
        try:
            live(second)
        finally:
            second.close()
    finally:
        first.close()
    assert turns.acquire(timeout=5)  # every turn given back (the server's thread may be a moment late)
    turns.release()
