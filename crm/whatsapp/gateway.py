"""The WebQR gateway: the one process that owns WhatsApp Web sessions.

WhatsApp answers StreamReplaced when two clients hold one session, so a session has exactly one
owner: the gateway that holds its lease in ``webqr_sessions`` (renewed by heartbeats). The
supervisor starts a runner per number people want connected, restarts runners that die (with
backoff), and stops or logs out the ones people switched off. Each runner has its own threads,
so one stuck session never stalls the others; session keys live in the session store (a file
under ``instance/webqr`` or the PostgreSQL database), so a restart reconnects without a scan.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import or_, select, update

from crm.db import utcnow
from crm.extensions import db

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
HEARTBEAT_SECONDS = 15.0
MAX_BACKOFF = 300.0

ClientFactory = Callable[..., Any]


def neonize_available() -> tuple[bool, str]:
    """Whether the WhatsApp Web library loads here (it needs glibc >= 2.34); never raises."""
    try:
        from crm.whatsapp.webqr_adapter import load_neonize

        load_neonize()
    except Exception as exc:  # any import failure disables WebQR, never the process
        return False, f"WebQR numbers are disabled: neonize cannot load ({exc.__class__.__name__}: {exc})"
    return True, "neonize loaded"


def default_client_factory() -> ClientFactory:
    from crm.whatsapp.webqr_adapter import load_neonize

    return load_neonize().client.NewClient


def session_store(app: Flask, account_id: int) -> str:
    """Where whatsmeow keeps this number's keys: the PostgreSQL database in scaled mode, else a
    private file under the instance folder. Either way it is a secret."""
    url = str(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.startswith("postgresql"):
        return "postgres://" + url.split("://", 1)[1]
    folder = Path(app.config["INSTANCE_PATH"]) / "webqr"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"account-{account_id}.sqlite3"
    if not path.exists():
        path.touch(mode=0o600)
    return str(path)


@dataclass
class Runner:
    account_id: int
    generation: int
    thread: threading.Thread
    session: Any  # WebQRSessionRunner
    started_at: float = field(default_factory=time.monotonic)


class Gateway:
    def __init__(
        self,
        app: Flask,
        client_factory: ClientFactory | None = None,
        *,
        poll_seconds: float = 2.0,
        owner: str | None = None,
    ):
        self.app = app
        self.factory = client_factory
        self.poll_seconds = poll_seconds
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.runners: dict[int, Runner] = {}
        self.failures: dict[int, tuple[int, float]] = {}  # account → (consecutive failures, retry at)

    def run(self, stop: threading.Event) -> None:
        from crm.ops import heartbeat

        heartbeat.ensure_started(self.app)  # this process's metrics and errors reach the others
        if self.factory is None:
            available, reason = neonize_available()
            log.info("gateway started: %s", reason)
            if not available:
                self._beat_while_disabled(stop, reason)
                return
            self.factory = default_client_factory()
        else:
            log.info("gateway started with a custom client factory")
        while not stop.is_set():
            try:
                with self.app.app_context():
                    self.reconcile()
                    # From this loop, so a stuck loop stops beating (readiness then says so).
                    heartbeat.beat_every_interval(
                        heartbeat.GATEWAY, {"webqr": True, "sessions": len(self.runners)}
                    )
            except Exception:
                log.exception("gateway loop failed; retrying")
            finally:
                with self.app.app_context():
                    db.session.remove()
            stop.wait(self.poll_seconds)
        self.stop_all()
        self._forget_heartbeat()
        log.info("gateway stopped")

    def _beat_while_disabled(self, stop: threading.Event, reason: str) -> None:
        """WhatsApp Web can't load here: keep saying so (readiness and the system page show it)."""
        from crm.ops import heartbeat

        while True:
            try:
                with self.app.app_context():
                    heartbeat.beat(heartbeat.GATEWAY, {"webqr": False, "detail": reason[:300]})
                    db.session.remove()
            except Exception as exc:
                log.warning("gateway heartbeat failed: %s", exc.__class__.__name__)
            if stop.wait(heartbeat.interval(self.app)):
                break
        self._forget_heartbeat()

    def _forget_heartbeat(self) -> None:
        from crm.ops import heartbeat

        try:
            with self.app.app_context():
                heartbeat.forget(heartbeat.GATEWAY)
                db.session.remove()
        except Exception as exc:  # the row just goes stale
            log.info("gateway heartbeat not removed: %s", exc.__class__.__name__)

    # --- the supervisor's one step -------------------------------------------------------------

    def reconcile(self) -> None:
        from crm.whatsapp.models import WebQRSession

        wanted = list(
            db.session.scalars(select(WebQRSession).where(WebQRSession.desired.in_(["running", "logout"])))
        )
        wanted_ids = {row.account_id for row in wanted}
        for row in wanted:
            if not self._own(row.account_id):
                continue
            runner = self.runners.get(row.account_id)
            alive = runner is not None and runner.thread.is_alive()
            if row.desired == "logout":
                if alive and runner is not None:
                    runner.session.logout()
                else:
                    self._finish_logout(row.account_id)
                continue
            if alive and runner is not None and runner.generation != row.generation:
                runner.session.stop()  # "new QR": restart with a fresh series
                runner.thread.join(timeout=10)
                alive = False
            if not alive:
                if runner is not None:
                    self._note_exit(row.account_id, runner)
                _count, retry_at = self.failures.get(row.account_id, (0, 0.0))
                if time.monotonic() >= retry_at:
                    self._start(row.account_id, row.generation)
        for account_id in [a for a in self.runners if a not in wanted_ids]:
            runner = self.runners.pop(account_id)
            runner.session.stop()

    def _own(self, account_id: int) -> bool:
        """Take or keep the lease on a session; another live gateway's session is left alone."""
        from crm.whatsapp.models import WebQRSession

        now = utcnow()
        taken = db.session.execute(
            update(WebQRSession)
            .where(
                WebQRSession.account_id == account_id,
                or_(
                    WebQRSession.owner.is_(None),
                    WebQRSession.owner == self.owner,
                    WebQRSession.heartbeat_at.is_(None),
                    WebQRSession.heartbeat_at < now - LEASE,
                ),
            )
            .values(owner=self.owner, heartbeat_at=now)
        ).rowcount  # type: ignore[attr-defined]
        db.session.commit()
        return bool(taken)

    def _start(self, account_id: int, generation: int) -> None:
        from crm.whatsapp.webqr_session import WebQRSessionRunner

        assert self.factory is not None
        session = WebQRSessionRunner(self.app, account_id, self.factory, self.owner)
        thread = threading.Thread(target=session.run, name=f"webqr-{account_id}", daemon=True)
        self.runners[account_id] = Runner(account_id, generation, thread, session)
        thread.start()
        log.info("started WebQR session for account %s", account_id)

    def _note_exit(self, account_id: int, runner: Runner) -> None:
        """A runner ended. Ended on purpose (logout, expired QR, ban): don't restart; otherwise
        back off exponentially so a broken session can't spin."""
        from crm.whatsapp.models import WebQRSession

        self.runners.pop(account_id, None)
        row = db.session.get(WebQRSession, account_id)
        if row is not None and row.state in ("logged_out", "qr_expired", "banned"):
            row.desired = "stopped"
            db.session.commit()
            self.failures.pop(account_id, None)
            return
        quick = time.monotonic() - runner.started_at < 60
        count = self.failures.get(account_id, (0, 0.0))[0] + 1 if quick else 1
        delay = min(MAX_BACKOFF, 2.0**count)
        self.failures[account_id] = (count, time.monotonic() + delay)
        log.warning("WebQR session for account %s ended; reconnecting in %.0fs", account_id, delay)

    def _finish_logout(self, account_id: int) -> None:
        from crm.whatsapp.models import WebQRSession

        row = db.session.get(WebQRSession, account_id)
        if row is not None:
            row.desired = "stopped"
            row.state = "logged_out" if row.jid else "idle"
            db.session.commit()

    def stop_all(self) -> None:
        for runner in list(self.runners.values()):
            runner.session.stop()
        for runner in list(self.runners.values()):
            runner.thread.join(timeout=10)
        self.runners.clear()


def run_gateway(stop: threading.Event, app: Flask | None = None) -> None:
    from flask import current_app

    Gateway(app or current_app._get_current_object()).run(stop)  # type: ignore[attr-defined]
