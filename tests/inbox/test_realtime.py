"""Live updates over the server's websockets: who may open one, what each tab is sent, and how."""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

import pytest
from flask import Flask

from tests import factories
from tests.sockets import Client, ServerSocket, registered


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


def heard(socket: Any, timeout: float) -> Any:
    """The socket's next frame, or None after ``timeout``; a resync is skipped (with Redis, the
    relay's first subscription tells the pages open then to refetch, whichever test they are)."""
    while True:
        frame = socket.receive(timeout=timeout)
        if not (isinstance(frame, str) and "data-resync" in frame):
            return frame


def live(socket: Any) -> None:
    """A socket's first frame: its tab is registered, the page shows itself live."""
    from crm.realtime.ws import LIVE

    assert heard(socket, 5) == LIVE


def test_another_sites_page_cannot_open_the_socket_with_our_cookies(
    live_server: str, owner: factories.Person
) -> None:
    import simple_websocket

    cookie = signed_in_cookie(live_server, owner)
    url = live_server.replace("http://", "ws://") + "/ws"
    same = Client(url, headers={"Cookie": cookie, "Origin": live_server})
    try:
        live(same)
        assert heard(same, 1.5) is None  # open and quiet: nothing happened yet
    finally:
        same.close()
    foreign = Client(url, headers={"Cookie": cookie, "Origin": "https://evil.example"})
    with pytest.raises(simple_websocket.ConnectionClosed):
        heard(foreign, 3)


@pytest.mark.parametrize("cookie", [None, "session=forged.value"], ids=["no-cookie", "forged"])
def test_a_socket_without_a_signed_in_session_is_told_so_and_closed(
    live_server: str, owner: factories.Person, cookie: str | None
) -> None:
    import simple_websocket

    from crm.realtime.ws import CLOSED

    headers = {"Origin": live_server, **({"Cookie": cookie} if cookie else {})}
    anonymous = Client(live_server.replace("http://", "ws://") + "/ws", headers=headers)
    frames = []
    try:
        with pytest.raises(simple_websocket.ConnectionClosed) as closed:
            for _ in range(3):
                frames.append(heard(anonymous, 5))
    finally:
        with contextlib.suppress(simple_websocket.ConnectionClosed):  # closed by the server already
            anonymous.close()
    assert closed.value.reason == 1008 and closed.value.message == "sign in first"
    assert all(frame == CLOSED for frame in frames)  # never live: at most told its session ended


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


def test_a_webqr_panel_is_rendered_once_per_event_language_and_role(
    app: Flask, owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each manager's tab renders WebQR panels on its own thread: one rendering serves them all."""
    from crm.realtime import fragments

    calls: list[tuple[object, bool]] = []

    def render_event(workspace_id: int, event: dict[str, object], *, manager: bool, user_id: int) -> str:
        calls.append((event["eid"], manager))
        return f"<div>{event['eid']} {manager}</div>"

    monkeypatch.setattr(fragments, "render_event", render_event)
    event = {"type": "webqr.state", "account_id": 1, "eid": "e1"}
    with app.test_request_context("/ws"):
        first = fragments.render_for_socket(owner.workspace_id, event, manager=True, user_id=owner.user_id)
        for _ in range(50):  # 50 more open tabs
            assert fragments.render_for_socket(owner.workspace_id, event, manager=True, user_id=1) == first
        assert first and calls == [("e1", True)]
        fragments.render_for_socket(owner.workspace_id, event, manager=False, user_id=1)
        fragments.render_for_socket(owner.workspace_id, {**event, "eid": "e2"}, manager=True, user_id=1)
        presence = {"type": "presence.changed", "conversation_id": 1, "eid": "e3"}  # per user: never shared
        fragments.render_for_socket(owner.workspace_id, presence, manager=True, user_id=1)
        fragments.render_for_socket(owner.workspace_id, presence, manager=True, user_id=2)
        assert calls[1:] == [("e1", False), ("e2", True), ("e3", True), ("e3", True)]


def test_shared_events_are_rendered_once_per_language_and_written_by_one_thread(
    app: Flask, owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm.realtime import fanout
    from crm.realtime.tab import Tab

    conversation_id = factories.conversation(owner)
    renders = counted_renders(monkeypatch, {"x1"})
    sockets = [ServerSocket() for _ in range(5)]
    sockets[4].stall()  # its client stopped reading
    woken: list[int] = []
    locales = ["en", "pt_BR", "en", "pt_BR", "en"]
    tabs = [
        Tab(owner.workspace_id, locale, ws, slow=print, plain=True, wake=lambda n=n: woken.append(n))
        for n, (locale, ws) in enumerate(zip(locales, sockets, strict=True))
    ]
    other = ServerSocket()
    elsewhere = Tab(owner.workspace_id + 1, "en", other, slow=print, plain=True)
    with registered(app, *tabs, elsewhere):
        event = {"type": "conversation.updated", "conversation_id": conversation_id, "eid": "x1"}
        assert fanout.deliver(app, owner.workspace_id, event) == 5
        assert sorted(renders) == ["en", "pt_BR"]  # once per language, not once per tab
        english, portuguese = sockets[0].texts(), sockets[1].texts()
        assert sockets[2].texts() == english and sockets[3].texts() == portuguese
        assert len(english) == 1 and english != portuguese and f"conversation-{conversation_id}" in english[0]
        # The stalled client's frame waits for its own thread, which was woken for it.
        assert [html for html, _ in tabs[4].backlog] == english and woken == [4]
        assert other.texts() == []  # another workspace's tab hears nothing


def test_every_open_page_is_told_to_refetch_when_events_may_have_been_lost(
    app: Flask, owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the relay lost Redis (every workspace), or when the fan-out thread's queue was full
    (that workspace): every page of the workspace, not only the inbox, is told."""
    import queue

    from crm.realtime import broker, fanout
    from crm.realtime.tab import Tab

    sockets = [ServerSocket() for _ in range(4)]
    tabs = [
        Tab(owner.workspace_id, "en", sockets[0], slow=print, plain=True),  # the inbox
        Tab(owner.workspace_id, "pt_BR", sockets[1], slow=print, plain=True, inbox=False, broadcast_id=5),
        Tab(owner.workspace_id, "en", sockets[2], slow=print, plain=True, inbox=False, manager=True),
        Tab(owner.workspace_id + 1, "en", sockets[3], slow=print, plain=True),  # another workspace
    ]
    with registered(app, *tabs):
        broker.resync_local()  # every workspace of this process
        told = fanout.resync_fragment()
        assert 'data-resync-within="2"' in told  # 4 pages: each refetches within 2 s
        assert all(ws.texts(count=1) == [told] for ws in sockets)

        real_put, lost = fanout._events.put_nowait, []

        def full_once(item: tuple[int, dict[str, object]]) -> None:
            if not lost:
                lost.append(item)
                raise queue.Full
            real_put(item)

        monkeypatch.setattr(fanout._events, "put_nowait", full_once)
        broker.deliver_local(owner.workspace_id, {"type": "conversation.updated", "conversation_id": 1})
        assert all(ws.texts(count=2) == [told] * 2 for ws in sockets[:3])
        assert sockets[3].texts() == [told]  # the other workspace missed nothing
        monkeypatch.setattr(fanout, "RESYNC_PAGES_A_SECOND", 1)
        assert 'data-resync-within="4"' in fanout.resync_fragment()  # spread with the pages told


def test_a_sockets_own_thread_writes_what_the_fanout_left_it(
    live_server: str, owner: factories.Person
) -> None:
    from crm.realtime import fanout
    from crm.realtime.tab import frame

    url = live_server.replace("http://", "ws://") + "/ws"
    headers = {"Cookie": signed_in_cookie(live_server, owner), "Origin": live_server}
    client = Client(url, headers=headers)
    try:
        live(client)
        with fanout._lock:
            (tab,) = fanout._tabs[owner.workspace_id]
        with tab.lock:  # the socket busy: the fan-out thread leaves the frame to its own thread
            assert tab.offer("<p>left</p>", frame("<p>left</p>")) and tab.backlog
        assert heard(client, 5) == "<p>left</p>"
    finally:
        client.close()


def test_a_client_that_answers_no_ping_is_cut_off(
    live_server: str, owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    from urllib.parse import urlsplit

    from wsproto.frame_protocol import FrameProtocol, Opcode

    from crm.realtime import ws

    monkeypatch.setattr(ws, "PING_SECONDS", 1.0)
    cookie = signed_in_cookie(live_server, owner)
    answering = Client(
        live_server.replace("http://", "ws://") + "/ws", headers={"Cookie": cookie, "Origin": live_server}
    )
    address = urlsplit(live_server)
    handshake = (
        f"GET /ws HTTP/1.1\r\nHost: {address.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {live_server}\r\nCookie: {cookie}\r\n\r\n"
    )
    try:
        live(answering)
        with socket.create_connection((address.hostname, address.port), timeout=5) as silent:
            silent.sendall(handshake.encode())
            received = b""
            while chunk := silent.recv(65536):  # until the server ends the stream
                received += chunk
        assert received.startswith(b"HTTP/1.1 101")
        frames = FrameProtocol(client=True, extensions=[])
        frames.receive_bytes(received.split(b"\r\n\r\n", 1)[1])
        opcodes = [frame.opcode for frame in frames.received_frames()]
        assert opcodes[0] is Opcode.TEXT and Opcode.PING in opcodes and Opcode.CLOSE not in opcodes
        assert heard(answering, 0.5) is None and answering.connected  # it answers: kept
    finally:
        answering.close()


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
    idle = Client(url, headers=headers)
    try:
        live(idle)
        assert heard(idle, 1.0) is None  # open, and nothing to say
        db.session.remove()  # this test's own connection back to the pool
        held = []
        for _ in range(10):
            held.append(db.engine.pool.checkedout())
            time.sleep(0.05)
        assert held == [0] * 10
    finally:
        idle.close()

    monkeypatch.setattr(ws, "RECHECK_SECONDS", 0.3)  # instead of every 30 s
    watched = Client(url, headers=headers)
    try:
        live(watched)
        assert heard(watched, 1.0) is None
        revoke_sessions_where(UserSession.user_id == owner.user_id, reason="logout")
        assert heard(watched, 5) == ws.CLOSED  # the page offers a reload, not a reconnect
        with pytest.raises(simple_websocket.ConnectionClosed):
            heard(watched, 5)
        assert (watched.close_reason, watched.close_message) == (1008, "session ended")
    finally:
        if watched.connected:
            watched.close()


def test_the_fanout_writes_its_built_frame_to_a_real_socket(
    app: Flask, live_server: str, owner: factories.Person
) -> None:
    """A browser offers compression; declined, its socket is plain, so the fan-out thread writes
    the frame it built once; the page reads the fragment whole, accents included."""
    from crm.realtime import fanout

    conversation_id = factories.inbound(factories.sandbox_account(owner), name="João Conceição")
    cookie = signed_in_cookie(live_server, owner)
    url = live_server.replace("http://", "ws://") + "/ws"
    offer = "permessage-deflate; client_max_window_bits"  # as browsers offer it
    headers = {"Cookie": cookie, "Origin": live_server, "Sec-WebSocket-Extensions": offer}
    socket = Client(url, headers=headers)
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
        html = heard(socket, 5)
        assert f'id="conversation-{conversation_id}"' in html and "João Conceição" in html
        assert len(sent) == 1 and sent[0].endswith(html.encode()) and len(sent[0]) - len(html.encode()) <= 4
    finally:
        socket.close()


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

    def opened(headers: dict[str, str]) -> Client:
        started = time.monotonic()
        client = Client(url, headers=headers)  # returns once the server answered
        assert time.monotonic() - started < 5, "the socket waited for a turn kept by another"
        return client

    url = live_server.replace("http://", "ws://") + "/ws"
    stranger = opened({"Origin": live_server})
    with pytest.raises(simple_websocket.ConnectionClosed):
        while True:
            heard(stranger, 5)  # CLOSED, then the close: nobody signed in
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
