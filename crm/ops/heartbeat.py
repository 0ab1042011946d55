"""Heartbeats: each queue consumer and WebQR gateway process says it is alive, where every web
process can read it; and the one background thread per process that writes them.

Where they live: a table, ``heartbeats``, one row per process, upserted every HEARTBEAT_SECONDS
by the process itself. A table works the same in both modes: in embedded mode the gateway is a
child process (in-process state would not reach the web process), in scaled mode workers and
gateways run on other machines; every web process reads the same rows, and they outlive a Redis
restart, which is exactly when people want to know what was running. A beat is one small UPSERT
per process every 15 seconds.

A row not renewed for three intervals is stale. A process that stops cleanly deletes its row;
one that was killed leaves it, and the writers prune rows not seen for a day.

What counts as alive:
- a worker: at least one of the queue consumer's threads is alive (huey's start-up and shut-down
  hooks register them, see ``crm/worker.py``); the embedded mode's in-process consumer counts;
- a gateway: its supervising loop went round recently (it beats from inside that loop).

The same thread flushes this process's metric counters and recent errors (``crm/ops/metrics.py``,
``crm/ops/recent_errors.py``), so a process has one background writer, not three.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import JSON, Integer, String, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import UTCDateTime, utcnow
from crm.extensions import Model, db

log = logging.getLogger(__name__)

WORKER = "worker"
GATEWAY = "gateway"
STALE_AFTER_BEATS = 3
PRUNE_AFTER = timedelta(days=1)


class Heartbeat(Model):
    __tablename__ = "heartbeats"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # kind:host:pid
    kind: Mapped[str] = mapped_column(String(16), index=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def interval(app: Flask | None = None) -> float:
    return float((app or current_app).config.get("HEARTBEAT_SECONDS", 15.0))


def stale_after(app: Flask | None = None) -> timedelta:
    return timedelta(seconds=STALE_AFTER_BEATS * interval(app))


def is_stale(row: Heartbeat, now: datetime | None = None) -> bool:
    return row.seen_at < (now or utcnow()) - stale_after()


def process_name(kind: str) -> str:
    return f"{kind}:{socket.gethostname()}:{os.getpid()}"


def beat(kind: str, info: dict[str, Any]) -> None:
    """Say this process is alive (insert or renew its row) and commit."""
    now = utcnow()
    values = {
        "name": process_name(kind),
        "kind": kind,
        "host": socket.gethostname()[:255],
        "pid": os.getpid(),
        "started_at": _started_at.setdefault(kind, now),
        "seen_at": now,
        "info": info,
    }
    dialect = db.session.get_bind().dialect.name
    stmt: Any = (pg_insert if dialect == "postgresql" else sqlite_insert)(Heartbeat).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"], set_={"seen_at": stmt.excluded.seen_at, "info": stmt.excluded.info}
    )
    db.session.execute(stmt)
    db.session.commit()


def forget(kind: str) -> None:
    """This process stops being one of ``kind``: its row goes at once (readiness sees it now,
    not three intervals later)."""
    db.session.execute(delete(Heartbeat).where(Heartbeat.name == process_name(kind)))
    db.session.commit()
    _started_at.pop(kind, None)


def prune() -> int:
    """Rows of processes not seen for a day (killed, or on a machine that is gone)."""
    gone = db.session.execute(delete(Heartbeat).where(Heartbeat.seen_at < utcnow() - PRUNE_AFTER))
    db.session.commit()
    return int(gone.rowcount or 0)  # type: ignore[attr-defined]


def heartbeats(kind: str | None = None) -> list[Heartbeat]:
    query = select(Heartbeat).order_by(Heartbeat.kind, Heartbeat.seen_at.desc())
    if kind is not None:
        query = query.where(Heartbeat.kind == kind)
    return list(db.session.scalars(query))


def fresh(kind: str) -> list[Heartbeat]:
    """The live processes of ``kind``: beats newer than three intervals."""
    return list(
        db.session.scalars(
            select(Heartbeat)
            .where(Heartbeat.kind == kind, Heartbeat.seen_at >= utcnow() - stale_after())
            .order_by(Heartbeat.seen_at.desc())
        )
    )


_started_at: dict[str, datetime] = {}


def forget_local() -> None:
    """Forget this process's start times and throttles (tests; a forked child)."""
    _started_at.clear()
    _last_beat.clear()


# --- queue consumers in this process ------------------------------------------------------------

_consumers: dict[threading.Thread, str] = {}  # a consumer's worker thread → its queue's name
_consumers_lock = threading.Lock()


def consumer_started(queue: str, app: Flask) -> None:
    """Called by each of a queue consumer's worker threads as it starts (huey's start-up hook)."""
    with _consumers_lock:
        _consumers[threading.current_thread()] = queue
    ensure_started(app)


def consumer_stopped(app: Flask) -> None:
    """Called by each worker thread as it stops; the last one out takes the row with it."""
    with _consumers_lock:
        _consumers.pop(threading.current_thread(), None)
        left = any(thread.is_alive() for thread in _consumers)
    if left:
        return
    try:
        with app.app_context():
            forget(WORKER)
            db.session.remove()
    except Exception as exc:  # the database may be what stopped us; the row just goes stale
        log.info("heartbeat: could not remove the worker's row: %s", exc.__class__.__name__)


def worker_info() -> dict[str, Any] | None:
    """This process's live consumer threads by queue, or None when it has none (then no beat)."""
    with _consumers_lock:
        for thread in [t for t in _consumers if not t.is_alive()]:
            del _consumers[thread]
        queues: dict[str, int] = {}
        for queue in _consumers.values():
            queues[queue] = queues.get(queue, 0) + 1
    return {"queues": queues} if queues else None


# --- the gateway beats from its own loop --------------------------------------------------------

_last_beat: dict[str, float] = {}


def beat_every_interval(kind: str, info: dict[str, Any]) -> None:
    """``beat`` at most once per interval: for loops that go round more often (the gateway's)."""
    now = time.monotonic()
    if now - _last_beat.get(kind, float("-inf")) < interval():
        return
    beat(kind, info)
    _last_beat[kind] = now


# --- the process's background writer ------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.app: Flask | None = None
        self.stop = threading.Event()
        self.failing = False


_writer = _Writer()


def ensure_started(app: Flask) -> None:
    """Start this process's writer thread once (and again in a forked child). Not under tests:
    they flush by hand, so nothing writes behind their back."""
    if _writer.pid == os.getpid() or app.config.get("TESTING"):
        return
    with _writer.lock:
        if _writer.pid == os.getpid():
            return
        _writer.pid, _writer.app = os.getpid(), app
        _writer.stop = threading.Event()
        thread = threading.Thread(target=_run, args=(app, _writer.stop), name="ops-writer", daemon=True)
        thread.start()
    atexit.register(_at_exit, app, os.getpid())


def _run(app: Flask, stop: threading.Event) -> None:
    beats = 0
    while not stop.wait(interval(app)):
        write_once(app, prune_rows=beats % 240 == 0)  # pruning: about once an hour
        beats += 1


def write_once(app: Flask, *, prune_rows: bool = False) -> None:
    """One round: the worker's beat (if this process consumes a queue), then this process's metric
    counters and recent errors. A failure (the database is down) keeps what was not written for
    the next round and is logged once, not every 15 seconds."""
    from crm.ops import metrics, recent_errors

    with app.app_context():
        try:
            info = worker_info()
            if info is not None:
                beat(WORKER, info)
            metrics.flush()
            recent_errors.flush()
            if prune_rows:
                prune()
        except Exception as exc:
            db.session.rollback()
            if not _writer.failing:
                log.warning("ops writer: could not write heartbeats and metrics: %s", exc.__class__.__name__)
            _writer.failing = True
        else:
            if _writer.failing:
                log.info("ops writer: writing again")
            _writer.failing = False
        finally:
            db.session.remove()


def _at_exit(app: Flask, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child that inherited the registration
        _writer.stop.set()
        write_once(app)


def _forget_after_fork() -> None:
    """A forked child (gunicorn's workers) starts with none of its parent's state."""
    global _consumers_lock
    _writer.pid = None
    _writer.lock = threading.Lock()  # another thread may have held the old one at the fork
    _consumers_lock = threading.Lock()
    _consumers.clear()
    _started_at.clear()
    _last_beat.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
