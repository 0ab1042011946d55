"""One open socket, written to by two threads: the process's fan-out thread and its own.

The fan-out thread writes the frames every tab of a workspace sees alike (crm/realtime/fanout.py)
and never waits for one socket: a client that stops reading (a phone on a bad network) would hold
back every other tab. A frame a socket cannot take whole at once is finished by that socket's own
thread, and the frames after it follow it there until the socket has caught up, so each tab sees
its events in order (``Tab.offer``). A client ``BACKLOG_FRAMES`` behind is cut off; its page
reconnects and fetches what it shows afresh (static/js/app.js), and so is one whose own thread has
waited ``STUCK_SECONDS`` for the client to take a frame (the fan-out thread looks: ``stuck``).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from simple_websocket import ConnectionClosed
from wsproto.connection import ConnectionState
from wsproto.frame_protocol import FrameProtocol

from crm.realtime.broker import Event

BACKLOG_FRAMES = 500  # frames a socket's own thread may owe its client before the client is cut off
STUCK_SECONDS = 60.0  # how long one frame may wait for a client before the client is cut off
# A ping frame, built once: building it with the connection's wsproto object would race with the
# library's reader thread (a close received meanwhile makes wsproto refuse).
PING = bytes(FrameProtocol(client=False, extensions=[]).ping())


def _nothing() -> None:
    pass


@dataclass(eq=False)
class Tab:
    """One open socket, as the fan-out thread sees it.

    Our writes to the socket all hold ``lock``, so frames from two threads never interleave (the
    library's reader thread still answers a client's ping or close by itself). The fan-out thread
    only ever tries the lock and writes without waiting (``offer``); the socket's own thread
    writes what the fan-out thread left it (``pending``, then ``backlog``) before anything of its
    own, waiting for the client frame by frame (``waiting_since``)."""

    workspace_id: int
    locale: str
    ws: Any  # simple_websocket.Server
    slow: Callable[[Event], None]  # hands a per-tab event to the socket's own thread
    manager: bool = False  # sees the WebQR pairing panels (a manager on a settings page)
    inbox: bool = True  # the page shows the inbox (conversations, threads, presence)
    broadcast_id: int | None = None  # the broadcast whose progress page this is
    # The fan-out thread writes its frame (``frame``) to this socket itself, without waiting: no
    # extension was agreed in the handshake (compression is declined, crm/realtime/ws.py) and the
    # socket is a TCP socket without a timeout (not TLS). Otherwise its own thread writes them all.
    plain: bool = False
    wake: Callable[[], None] = _nothing  # wakes the socket's own thread: there is a backlog to write
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: bytes = b""  # the rest of a frame the fan-out thread wrote in part
    backlog: deque[tuple[str, bytes]] = field(default_factory=deque)  # frames for the own thread
    dropped: bool = False  # cut off, or its own thread has ended: nothing more is written here
    waiting_since: float | None = None  # when the own thread began the write it waits on

    def offer(self, html: str, built: bytes) -> bool:
        """The fan-out thread's write of ``html`` (``built`` is its frame): now if the socket
        takes it, else by the socket's own thread, after what that thread already owes. Never
        waits. False when nothing will be written: the socket is gone, or was cut off now (it
        failed, or owes ``BACKLOG_FRAMES``)."""
        if self.dropped:
            return False
        if not self.backlog and self.plain and self.lock.acquire(blocking=False):
            try:
                if self.dropped or not self._open():
                    return False
                if not self.pending:
                    try:
                        written = self.ws.sock.send(built, socket.MSG_DONTWAIT)
                    except BlockingIOError:  # the client's buffers are full
                        written = 0
                    except OSError:  # the connection broke
                        self.drop()
                        return False
                    if written:
                        self.pending = built[written:]
                        if self.pending:
                            self.wake()
                        return True
            finally:
                self.lock.release()
        if len(self.backlog) >= BACKLOG_FRAMES:
            self.drop()
            return False
        self.backlog.append((html, built))
        self.wake()
        return not self.dropped  # its own thread may have ended meanwhile (``finish``)

    def stuck(self, now: float) -> bool:
        """Whether the own thread has waited ``STUCK_SECONDS`` for the client to take a frame."""
        since = self.waiting_since
        return since is not None and now - since > STUCK_SECONDS

    def flush(self) -> None:
        """The socket's own thread: write what the fan-out thread left it, in order."""
        with self.lock:
            self._flush()

    def send(self, html: str, built: bytes | None = None) -> None:
        """The socket's own thread: write ``html`` after whatever it owes, waiting for the client.
        ``built`` is ``html``'s frame (``frame``), written as it is when the socket is plain."""
        with self.lock:
            self._flush()
            self._write(html, built)

    def ping(self) -> bool:
        """The socket's own thread, now and then: a ping, after whatever it owes (the websocket
        library's own pings would bypass ``lock``). False when the last ping got no pong: the
        client is gone."""
        with self.lock:
            if not self.ws.pong_received:
                return False
            self.ws.pong_received = False
            self._flush()
            self._check_open()
            self._sendall(PING)
        return True

    def close(self, reason: int, message: str) -> None:
        """Close the socket between two frames, never in the middle of one."""
        with self.lock:
            self._flush()
            self.ws.close(reason=reason, message=message)

    def drop(self) -> None:
        """Cut a client off without a close frame (it would wait behind the frames not read):
        its page sees the socket drop, reconnects and fetches what it shows afresh. A write
        waiting for the client ends with an error."""
        self.dropped = True
        with contextlib.suppress(OSError):
            self.ws.sock.shutdown(socket.SHUT_RDWR)
        self.wake()

    def finish(self) -> None:
        """The socket's own thread, as it ends: nothing more from the fan-out thread, and no half
        frame left before the library writes its close frame (a client that cannot take the
        rest now is cut off instead)."""
        with self.lock:
            self.dropped = True
            self.backlog.clear()
            if self.pending:
                with contextlib.suppress(OSError):
                    self.pending = self.pending[self.ws.sock.send(self.pending, socket.MSG_DONTWAIT) :]
                if self.pending:
                    self.drop()

    def _flush(self) -> None:
        if self.pending:
            self._sendall(self.pending)
            self.pending = b""
        while self.backlog:
            html, built = self.backlog.popleft()
            self._write(html, built)

    def _open(self) -> bool:
        """As the library's own send: nothing after a close frame, sent or received."""
        return bool(self.ws.connected) and self.ws.ws.state is ConnectionState.OPEN

    def _check_open(self) -> None:
        if not self._open():
            raise ConnectionClosed(self.ws.close_reason, self.ws.close_message)

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[None]:
        """A write that waits for the client as long as it takes (``stuck`` watches it)."""
        self.waiting_since = time.monotonic()
        try:
            yield
        finally:
            self.waiting_since = None

    def _write(self, html: str, built: bytes | None) -> None:
        if built is None or not self.plain:
            with self._waiting():
                self.ws.send(html)
        else:
            self._check_open()
            self._sendall(built)

    def _sendall(self, data: bytes) -> None:
        with self._waiting():
            self.ws.sock.sendall(data)


def direct(sock: Any) -> bool:
    """Whether the fan-out thread can write to ``sock`` without waiting (``Tab.plain``): a plain
    TCP socket in blocking mode without a timeout, as gunicorn and werkzeug give it. A timeout
    would make CPython wait for room before a MSG_DONTWAIT send; TLS sockets refuse its flags."""
    tcp = isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket)
    return tcp and sock.gettimeout() is None


def frame(html: str) -> bytes:
    """``html`` as one unmasked text frame, as a server sends it on a plain socket. The websocket
    library encodes the text and builds the frame again for each socket (10 µs a socket for a
    5 KB fragment, against 3 µs to write bytes built once)."""
    return bytes(FrameProtocol(client=False, extensions=[]).send_data(html, True))
