"""What the providers' emulators share: their WSGI app served on 127.0.0.1 from a background
thread, started and stopped by the test (or used as a context manager)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


class QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log lines in test output (errors are still logged)."""


class LocalServer:
    """Subclasses provide ``_wsgi``; ``host``/``_requested_port`` say where to listen (port 0:
    any free one)."""

    thread_name = "local-server"
    poll_interval = 0.05
    host = "127.0.0.1"
    _requested_port = 0
    _server: BaseWSGIServer | None = None
    _thread: threading.Thread | None = None

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raise NotImplementedError

    def _before_start(self) -> None:
        """Hook: reset what a previous run left."""

    def _before_stop(self) -> None:
        """Hook: release requests held open, so the server can shut down promptly."""

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self._before_start()
        self._server = make_server(
            self.host, self._requested_port, self._wsgi, threaded=True, request_handler=QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(self.poll_interval,), name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self._before_stop()
        if server is not None:
            server.shutdown()
            if thread is not None:
                thread.join()
            server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running: call start() first")
        return self._server.port
