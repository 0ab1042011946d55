"""One open socket written to by two threads (crm/realtime/tab.py): the fan-out thread never waits
for a client, each tab gets its frames whole and in order, and a client that stops reading or
answering is cut off (its page reconnects and fetches what it shows afresh)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask

from crm.realtime import tab as tab_module
from crm.realtime.tab import Tab, frame
from tests.sockets import ServerSocket, registered, tcp_pair


@pytest.fixture
def ws() -> Iterator[ServerSocket]:
    server_socket = ServerSocket()
    yield server_socket
    server_socket.close()


def plain_tab(ws: ServerSocket, **fields: object) -> Tab:
    return Tab(1, "en", ws, slow=print, plain=True, **fields)  # type: ignore[arg-type]


def offered(tab: Tab, html: str) -> bool:
    return tab.offer(html, frame(html))


def test_a_frame_taken_in_part_is_finished_by_the_own_thread_and_the_next_ones_follow_it(
    ws: ServerSocket,
) -> None:
    woken: list[bool] = []
    tab = plain_tab(ws, wake=lambda: woken.append(True))
    assert offered(tab, "<p>first</p>") and ws.texts() == ["<p>first</p>"] and not woken  # written at once
    ws.stall(room=5)  # the client takes 5 bytes more, then stops reading
    htmls = [f"<p id='m{n}'>{'x' * 1000}</p>" for n in range(3)]
    assert all(offered(tab, html) for html in htmls)  # none waited: the stall would have blocked
    assert len(tab.pending) == len(frame(htmls[0])) - 5 and [h for h, _ in tab.backlog] == htmls[1:]
    assert woken
    # The own thread writes the rest, waiting for the client; meanwhile the fan-out thread finds
    # the socket busy and leaves its frame after the others.
    writer = threading.Thread(target=tab.flush)
    writer.start()
    deadline = time.monotonic() + 5
    while tab.waiting_since is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.is_alive() and tab.waiting_since is not None and tab.lock.locked()
    assert offered(tab, "<p>last</p>") and tab.backlog[-1][0] == "<p>last</p>"
    ws.resume()
    writer.join(5)
    assert not writer.is_alive() and tab.waiting_since is None
    assert ws.texts() == ["<p>first</p>", *htmls, "<p>last</p>"]
    assert not tab.pending and not tab.backlog
    assert offered(tab, "<p>now</p>") and ws.texts()[-1] == "<p>now</p>"  # written at once again


def test_a_real_clients_full_buffers_leave_the_frames_to_the_own_thread_in_order(ws: ServerSocket) -> None:
    """The same over the kernel's own buffers (no scripted stall): a client reading nothing
    fills them, and the fan-out thread never waits for it."""
    tab = plain_tab(ws)
    htmls = [f"<p id='m{n}'>{'y' * 60_000}</p>" for n in range(200)]
    sent: list[str] = []
    started = time.monotonic()
    for html in htmls:
        assert offered(tab, html)
        sent.append(html)
        if tab.backlog:
            break
    assert tab.backlog, "the kernel took 12 MB without the client reading"
    assert time.monotonic() - started < 5
    writer = threading.Thread(target=tab.flush)
    writer.start()
    received = ws.texts(wait=1.0)
    writer.join(10)
    assert not writer.is_alive()
    assert received + ws.texts()[len(received) :] == sent


def test_a_client_that_owes_too_many_frames_is_cut_off(
    ws: ServerSocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tab_module, "BACKLOG_FRAMES", 3)
    woken: list[bool] = []
    tab = plain_tab(ws, wake=lambda: woken.append(True))
    ws.stall()
    assert [offered(tab, f"<p>{n}</p>") for n in range(5)] == [True] * 3 + [False] * 2
    assert tab.dropped and woken  # its own thread wakes, and ends
    ws.read_to_end()  # cut off without a close frame: the page reconnects and refetches
    tab.finish()
    assert not tab.backlog


def test_an_own_thread_waiting_too_long_for_its_client_is_stuck(
    ws: ServerSocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    tab = plain_tab(ws)
    assert not tab.stuck(time.monotonic())
    ws.stall()
    html = "<p>presence</p>"
    failed: list[OSError] = []

    def own_thread() -> None:
        try:
            tab.send(html, frame(html))
        except OSError as error:
            failed.append(error)

    writer = threading.Thread(target=own_thread)
    writer.start()
    deadline = time.monotonic() + 5
    while tab.waiting_since is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tab.waiting_since is not None
    assert not tab.stuck(time.monotonic())
    assert tab.stuck(time.monotonic() + tab_module.STUCK_SECONDS + 1)
    tab.drop()  # what the fan-out thread does then: the waiting write ends with an error
    writer.join(5)
    assert not writer.is_alive() and failed and tab.waiting_since is None


def test_the_fanout_thread_cuts_off_a_tab_whose_own_thread_is_stuck(app: Flask, ws: ServerSocket) -> None:
    from crm.realtime import fanout

    tab, waiting = plain_tab(ws), plain_tab(ServerSocket())
    with registered(app, tab, waiting):
        now = time.monotonic()
        tab.waiting_since = now - tab_module.STUCK_SECONDS - 1
        waiting.waiting_since = now - 1  # a slow client, not a gone one
        fanout._cut_off_stuck(now)
        assert tab.dropped and ws.sock.shut and not waiting.dropped


def test_pings_follow_what_is_owed_and_a_client_that_did_not_answer_is_gone(ws: ServerSocket) -> None:
    tab = plain_tab(ws)
    ws.stall()
    assert offered(tab, "<p>a</p>") and tab.backlog  # owed to the client
    ws.resume()
    assert tab.ping()
    assert ws.texts() == ["<p>a</p>"] and ws.pings == 1  # the frame first, then the ping
    assert not tab.ping()  # no pong to the last one
    ws.pong_received = True  # the library's reader thread saw a pong
    assert tab.ping() and ws.texts() == ["<p>a</p>"] and ws.pings == 2


def test_a_socket_ending_completes_a_half_frame_or_cuts_the_client_off(ws: ServerSocket) -> None:
    tab = plain_tab(ws)
    ws.stall(room=3)
    assert offered(tab, "<p>half</p>") and tab.pending
    ws.resume()
    tab.finish()  # the rest goes now: the library's close frame may follow it
    assert not tab.pending and tab.dropped and ws.texts() == ["<p>half</p>"]
    assert not offered(tab, "<p>late</p>")  # nothing more from the fan-out thread

    other = ServerSocket()
    try:
        stuck = plain_tab(other)
        other.stall(room=3)
        assert offered(stuck, "<p>half</p>") and stuck.pending
        stuck.finish()  # the client takes nothing more: cut off rather than a broken frame
        assert stuck.dropped and other.sock.shut
    finally:
        other.close()


def test_a_socket_the_fanout_cannot_write_to_directly_gets_everything_from_its_own_thread(
    ws: ServerSocket,
) -> None:
    tab = Tab(1, "en", ws, slow=print, plain=False)
    assert offered(tab, "<p>x</p>") and ws.texts() == []
    tab.flush()
    assert ws.library_sent == ["<p>x</p>"]  # through the library (an extension, or TLS)
    server, client = tcp_pair()
    try:
        assert tab_module.direct(server)
        server.settimeout(5)  # CPython would wait for room before a MSG_DONTWAIT send
        assert not tab_module.direct(server)
        assert not tab_module.direct(ws.sock)
    finally:
        server.close()
        client.close()


def test_a_broken_connection_is_cut_off_at_the_fanouts_first_write(ws: ServerSocket) -> None:
    ws.sock.shut = True  # the next write fails as on a reset connection
    tab = plain_tab(ws)
    assert not offered(tab, "<p>x</p>") and tab.dropped


@pytest.mark.parametrize("size", [10, 200, 70_000])  # the three lengths a frame's header can give
def test_a_frame_built_once_reads_back_as_the_text_on_any_plain_socket(size: int) -> None:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request, TextMessage

    from crm.realtime.tab import frame

    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="example.com", target="/ws")))
    request = next(server.events())
    assert isinstance(request, Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    html = ("<p>Olá, ação às 10h ✓</p>" * (size // 20 + 1))[:size]
    client.receive_data(frame(html) + frame(html))  # the same bytes, written twice
    texts = [event.data for event in client.events() if isinstance(event, TextMessage)]
    assert texts == [html, html]


def test_no_built_frame_goes_to_a_socket_that_is_closing() -> None:
    """As the websocket library's own send: after a close frame, sent or received, nothing more,
    from the socket's own thread (``send``: an error) or from the fan-out thread (``offer``)."""
    from types import SimpleNamespace

    from simple_websocket import ConnectionClosed
    from wsproto.connection import ConnectionState

    from crm.realtime.tab import Tab, frame

    written: list[bytes] = []

    def send(data: bytes, _flags: int) -> int:
        written.append(data)
        return len(data)

    sock = SimpleNamespace(sendall=written.append, send=send)
    built = frame("<p>x</p>")
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
            Tab(1, "en", ws, slow=print, plain=True).send("<p>x</p>", built)
        assert not Tab(1, "en", ws, slow=print, plain=True).offer("<p>x</p>", built)
    ws = SimpleNamespace(connected=True, ws=SimpleNamespace(state=ConnectionState.OPEN), sock=sock)
    Tab(1, "en", ws, slow=print, plain=True).send("<p>x</p>", built)
    assert Tab(1, "en", ws, slow=print, plain=True).offer("<p>x</p>", built)
    assert written == [built, built]
