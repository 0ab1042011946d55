"""Helpers for tests that run the product's own processes (``flask crm serve``, ``worker``)."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_gracefully(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM, as a process manager stops it; killed if it has not exited after ``timeout``."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
