"""The WebQR gateway: the one process that owns WhatsApp Web sessions.

WhatsApp answers StreamReplaced when two clients hold one session, so exactly one gateway
runs per set of sessions. Until WebQR numbers exist this loop only reports that it is alive;
the WebQR provider plugs its session supervisor in here.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


def neonize_available() -> tuple[bool, str]:
    """Whether the WhatsApp Web library loads here (it needs glibc >= 2.34); never raises."""
    try:
        import neonize  # noqa: F401
    except Exception as exc:  # any import failure disables WebQR, never the process
        return False, f"WebQR numbers are disabled: neonize cannot load ({exc.__class__.__name__}: {exc})"
    return True, "neonize loaded"


def run_gateway(stop: threading.Event, heartbeat_seconds: float = 30.0) -> None:
    _available, reason = neonize_available()
    log.info("gateway started: %s", reason)
    while not stop.wait(heartbeat_seconds):
        log.debug("gateway alive")
    log.info("gateway stopped")
