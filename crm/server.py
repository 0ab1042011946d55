"""``flask crm serve``: gunicorn with threads (websockets need a thread each), in-process.

Embedded mode (no REDIS_URL) runs a single web worker that also hosts the task consumer on
background threads, and supervises the WebQR gateway as a child process: WhatsApp Web's Go
library can abort the process it runs in, and that must never take the web server down.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

log = logging.getLogger(__name__)


def _gateway_child() -> None:
    """The gateway in a process of its own (embedded mode): same environment, its own app."""
    from crm import create_app
    from crm.logs import set_process
    from crm.whatsapp.gateway import run_gateway

    set_process("gateway")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    app = create_app()
    run_gateway(stop, app)


class GatewaySupervisor:
    """Keeps one gateway child process alive, restarting it with backoff if it dies."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.process: multiprocessing.process.BaseProcess | None = None

    def run(self) -> None:
        context = multiprocessing.get_context("spawn")
        failures = 0
        while not self.stopping.is_set():
            started = time.monotonic()
            self.process = context.Process(target=_gateway_child, name="webqr-gateway", daemon=True)
            self.process.start()
            self.process.join()
            if self.stopping.is_set():
                break
            failures = failures + 1 if time.monotonic() - started < 60 else 1
            delay = min(300.0, 2.0**failures)
            log.error("gateway process exited with %s; restarting in %.0fs", self.process.exitcode, delay)
            self.stopping.wait(delay)

    def stop(self) -> None:
        self.stopping.set()
        process = self.process
        if process is not None and process.is_alive():
            process.terminate()
            process.join(timeout=15)
            if process.is_alive():
                process.kill()


class EmbeddedServices:
    """The task consumer (threads) and the gateway (a supervised child) of embedded mode."""

    def __init__(self, app: Flask):
        self.app = app
        self.consumer: Any = None
        self.ai_consumer: Any = None
        self.gateway = GatewaySupervisor()

    def start(self) -> None:
        from crm.worker import ai_huey, start_in_process_consumer

        self.consumer = start_in_process_consumer(self.app.config["WORKER_THREADS"])
        self.ai_consumer = start_in_process_consumer(self.app.config["AI_WORKER_THREADS"], ai_huey)
        if os.environ.get("CRM_EMBEDDED_GATEWAY", "1") != "0":
            threading.Thread(target=self.gateway.run, name="gateway-supervisor", daemon=True).start()

    def stop(self) -> None:
        self.gateway.stop()
        for consumer in (self.ai_consumer, self.consumer):
            if consumer is not None:
                consumer.stop(graceful=True)


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
        from crm.warmup import open_connections

        open_connections(app)  # in the worker once forked: connections are not shared across a fork
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
        "logger_class": "crm.logs.GunicornLogger",  # gunicorn's own lines in LOG_FORMAT, masked
        "post_worker_init": post_worker_init,
        "worker_exit": worker_exit,
    }
    log.info("serving on http://%s:%s (%s mode)", host, port, "embedded" if embedded else "scaled")
    Server(app, options).run()
