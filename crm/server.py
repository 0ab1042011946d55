"""``flask crm serve``: gunicorn with threads (websockets need a thread each), in-process.

Embedded mode (no REDIS_URL) runs a single web worker that also hosts the task consumer and
the WebQR gateway on background threads: one process, one SQLite file, a complete product.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

log = logging.getLogger(__name__)


class EmbeddedServices:
    """The worker and gateway threads that ride along with the web process in embedded mode."""

    def __init__(self, app: Flask):
        self.app = app
        self.stop_event = threading.Event()
        self.consumer: Any = None

    def start(self) -> None:
        from crm.whatsapp.gateway import run_gateway
        from crm.worker import start_in_process_consumer

        self.consumer = start_in_process_consumer(self.app.config["WORKER_THREADS"])
        threading.Thread(
            target=run_gateway, args=(self.stop_event, self.app), name="webqr-gateway", daemon=True
        ).start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.consumer is not None:
            self.consumer.stop(graceful=True)


class Server(BaseApplication):
    def __init__(self, app: Flask, options: dict[str, Any]):
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.application


def serve(app: Flask, host: str, port: int) -> None:
    embedded = not app.config["REDIS_URL"]
    services = EmbeddedServices(app) if embedded else None

    def post_worker_init(worker: Any) -> None:
        if services is not None:
            services.start()

    def worker_exit(server: Any, worker: Any) -> None:
        if services is not None:
            services.stop()

    options = {
        "bind": f"{host}:{port}",
        # One worker in embedded mode: SQLite, the queue consumer and the gateway live in it.
        "workers": 1 if embedded else app.config["WEB_CONCURRENCY"],
        "worker_class": "gthread",
        "threads": app.config["WEB_THREADS"],
        "timeout": 120,
        "graceful_timeout": 20,
        "accesslog": None,  # the app logs requests itself, with secrets masked (crm/logs.py)
        "post_worker_init": post_worker_init,
        "worker_exit": worker_exit,
    }
    log.info("serving on http://%s:%s (%s mode)", host, port, "embedded" if embedded else "scaled")
    Server(app, options).run()
