"""Helpers for tests that run the product's own processes (``flask crm serve``, ``worker``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from typing import Any


def free_port() -> int:
    """A local port nothing listens on: a server can bind it, a client is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def own_environment() -> dict[str, str]:
    """This environment without the settings a product process must take from the test instead
    (a developer's DATABASE_URL, REDIS_URL or SECRET_KEY)."""
    return {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")}


def stop_gracefully(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM, as a process manager stops it; killed if it has not exited after ``timeout``."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
