"""Logging: one format everywhere, and an access log that never writes secrets.

Webhook keys, invitation tokens and query strings (Meta sends ``hub.verify_token`` in one) are
masked before a request line is logged.
"""

from __future__ import annotations

import logging
import os
import re
import time

from flask import Flask, Response, g, request

access_log = logging.getLogger("crm.access")

_SECRET_PATHS = re.compile(r"^(/webhooks/cloud/|/invite/)[^/]+")


def masked_path(path: str) -> str:
    return _SECRET_PATHS.sub(lambda m: m.group(1) + "…", path)


def setup_logging(app: Flask) -> None:
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("crm").setLevel(level)
    for chatty in ("httpx", "httpcore"):  # they log whole URLs, query strings (tokens) included
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.monotonic()

    @app.after_request
    def _log_request(response: Response) -> Response:
        if not request.path.startswith("/static/"):
            elapsed = (time.monotonic() - g.get("request_started", time.monotonic())) * 1000
            access_log.info(
                "%s %s %s %.1fms workspace=%s",
                request.method,
                masked_path(request.path),
                response.status_code,
                elapsed,
                g.get("workspace_id", "-"),
            )
        return response
