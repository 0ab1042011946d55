"""A server-side websocket as ``crm.realtime.tab.Tab`` uses it, over a real TCP connection.

``ServerSocket`` has what Tab touches of a ``simple_websocket.Server`` (``sock``, ``ws``,
``connected``, ``send``, ``pong_received``); the test reads what reached the client from the
other end (``texts``), as a browser would, frames decoded by wsproto. ``stall`` makes the client
stop reading at a chosen byte, whatever the kernel's buffers would have taken.

``Client`` is a browser's end of a socket to the live server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import simple_websocket
from wsproto.connection import ConnectionState
from wsproto.frame_protocol import FrameProtocol, Opcode

if TYPE_CHECKING:
    from flask import Flask

    from crm.realtime.tab import Tab


class Client(simple_websocket.Client):
    """simple_websocket's client, which also reads the frames that came with the server's answer
    to the handshake. The library's own leaves them unread until more comes: on a busy machine the
    server's first frame (or its close) arrives in the same read as the answer."""

    def _thread(self) -> None:
        try:
            if not self._handle_events():  # a close among them: the reader reads no further
                self.connected = False
        except OSError:  # answering them failed: the connection is gone
            self.connected = False
            self.event.set()
        super()._thread()


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of a loopback TCP connection (server's, client's)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


class StallingSocket:
    """The server's end: as the real socket, except that once ``room`` is set the client takes
    only that many more bytes until ``resume``. A write that does not wait (MSG_DONTWAIT) takes
    what fits; one that waits (``sendall``) waits for ``resume``, or fails once shut down."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.room: int | None = None
        self.resumed = threading.Event()
        self.shut = False

    def send(self, data: bytes, flags: int = 0) -> int:
        if self.shut:
            raise BrokenPipeError
        if self.room is None:
            return self.real.send(data, flags)
        if not self.room:
            raise BlockingIOError
        taken = data[: self.room]
        self.real.sendall(taken)
        self.room -= len(taken)
        return len(taken)

    def sendall(self, data: bytes) -> None:
        if self.room is not None:
            data = data[self.send(data) if self.room else 0 :]
            self.resumed.wait(10)
            if self.shut or not self.resumed.is_set():
                raise BrokenPipeError
        self.real.sendall(data)

    def shutdown(self, how: int) -> None:
        self.shut = True
        self.resumed.set()  # a write waiting ends with an error
        self.real.shutdown(how)

    def gettimeout(self) -> float | None:
        return self.real.gettimeout()


class ServerSocket:
    def __init__(self) -> None:
        real, self.client = tcp_pair()
        self.sock = StallingSocket(real)
        self.connected = True
        self.ws: Any = _Protocol()
        self.pong_received = True
        self.close_reason, self.close_message = 1000, ""
        self.library_sent: list[str] = []  # what went through the library's own send
        self._frames = FrameProtocol(client=True, extensions=[])
        self._texts: list[str] = []
        self.pings = 0  # pings the client has read

    def send(self, html: str) -> None:
        self.library_sent.append(html)

    def stall(self, room: int = 0) -> None:
        """The client reads ``room`` more bytes, then nothing until ``resume``."""
        self.sock.room = room
        self.sock.resumed.clear()

    def resume(self) -> None:
        self.sock.room = None
        self.sock.resumed.set()

    def texts(self, *, wait: float = 0.2, count: int | None = None) -> list[str]:
        """Every text message the client has received so far, reading until nothing more comes
        for ``wait`` seconds, or (``count``) until there are that many, for at most 5 s."""
        deadline = time.monotonic() + 5
        while True:
            self.client.settimeout(wait if count is None else 0.05)
            data, ended = b"", False
            try:
                while chunk := self.client.recv(1 << 20):
                    data += chunk
                ended = True  # the server's end shut the stream
            except TimeoutError:
                pass
            self._frames.receive_bytes(data)
            for frame in self._frames.received_frames():
                if frame.opcode is Opcode.TEXT:
                    self._texts.append(str(frame.payload))
                elif frame.opcode is Opcode.PING:
                    self.pings += 1
            if count is None or ended or len(self._texts) >= count or time.monotonic() > deadline:
                return list(self._texts)

    def read_to_end(self) -> None:
        """Read until the server's end shuts the stream (TimeoutError if it does not within 5 s)."""
        self.client.settimeout(5)
        try:
            while self.client.recv(1 << 20):
                pass
        except ConnectionResetError:
            pass

    def close(self) -> None:
        self.resume()
        self.sock.real.close()
        self.client.close()


class _Protocol:
    """The wsproto connection's part Tab reads: its state."""

    state = ConnectionState.OPEN


@contextlib.contextmanager
def registered(app: Flask, *tabs: Tab) -> Iterator[None]:
    """``tabs`` registered with this process's fan-out; unregistered, their sockets closed, after."""
    from crm.realtime import fanout

    stops = [fanout.register(app, tab) for tab in tabs]
    try:
        yield
    finally:
        for stop in stops:
            stop()
        for tab in tabs:
            tab.ws.close()
