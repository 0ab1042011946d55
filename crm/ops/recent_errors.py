"""Recent errors: the last WARNING and ERROR log records of every process, for the system page.

A logging handler keeps each record's level, time, logger and message (cut to 300 characters,
credentials in URLs and bearer tokens masked; never the traceback, only the exception's class) in
a small in-memory ring; the process's background writer (``crm/ops/heartbeat.py``) moves them to
the ``log_records`` table, which keeps the newest few hundred. A table rather than a Redis list:
the gateway is a separate process even in embedded mode, and the errors people most need to see
("Redis does not answer") must not be stored in the thing that is down. A storm of warnings
costs nothing more: the ring keeps the newest 50 per process between two writes.

A record made while a request of a workspace is being served carries that workspace's id, so an
admin sees their workspace's records and those of no workspace (workers, the gateway), never
another workspace's.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import g, has_request_context
from sqlalchemy import Integer, String, delete, insert, or_, select
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import UTCDateTime
from crm.extensions import Model, db
from crm.logs import mask_secrets

MESSAGE_MAX = 300
RING = 50  # per process, between two writes
KEPT = 500  # rows in the table
SHOWN = 20

_URL_CREDENTIALS = re.compile(r"(\w+://)[^/\s:@]+:[^/\s@]+@")  # user:password@ in a database URL


class LogRecordRow(Model):
    __tablename__ = "log_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    level: Mapped[str] = mapped_column(String(16))
    logger: Mapped[str] = mapped_column(String(100))
    message: Mapped[str] = mapped_column(String(MESSAGE_MAX))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    workspace_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key: logs outlive rows


@dataclass(frozen=True)
class RecentError:
    at: datetime
    level: str
    logger: str
    message: str
    workspace_id: int | None = None


def clean_message(text: str) -> str:
    """Masked like the log lines themselves (tokens, keys, secret paths), and cut to 300 characters."""
    text = mask_secrets(_URL_CREDENTIALS.sub(r"\1***@", text))
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1] + "…"


_lock = threading.Lock()
_ring: deque[RecentError] = deque(maxlen=RING)


class RecentErrorsHandler(logging.Handler):
    """Keeps WARNING and above in this process's ring; never raises, never logs, never blocks on I/O."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            try:
                message = record.getMessage()
            except Exception:
                message = str(record.msg)
            if record.exc_info and record.exc_info[0] is not None:
                message = f"{message} ({record.exc_info[0].__name__})"
            workspace_id = getattr(record, "workspace_id", None)  # an explicit ``extra`` wins
            if workspace_id is None:  # else the request's or task's, as crm/logs.py stamped it
                workspace_id = getattr(getattr(record, "crm_context", None), "workspace_id", None)
            if workspace_id is None and has_request_context():
                workspace_id = g.get("workspace_id")
            entry = RecentError(
                at=datetime.fromtimestamp(record.created, UTC),
                level=record.levelname[:16],
                logger=record.name[:100],
                message=clean_message(message),
                workspace_id=workspace_id if isinstance(workspace_id, int) else None,
            )
            with _lock:
                _ring.append(entry)
        except Exception:  # a log handler must never break the code that logs
            self.handleError(record)


_handler: RecentErrorsHandler | None = None


def install_handler() -> None:
    """Once per process, on the root logger: every library's warnings count (huey's task errors)."""
    global _handler
    if _handler is None:
        _handler = RecentErrorsHandler()
        logging.getLogger().addHandler(_handler)


def flush() -> int:
    """Move this process's ring into the table and keep the table to its newest KEPT rows."""
    with _lock:
        batch = list(_ring)
        _ring.clear()
    if not batch:
        return 0
    host, pid = socket.gethostname()[:255], os.getpid()
    try:
        db.session.execute(
            insert(LogRecordRow),
            [
                {
                    "at": e.at,
                    "level": e.level,
                    "logger": e.logger,
                    "message": e.message,
                    "host": host,
                    "pid": pid,
                    "workspace_id": e.workspace_id,
                }
                for e in batch
            ],
        )
        cutoff = db.session.scalar(
            select(LogRecordRow.id).order_by(LogRecordRow.id.desc()).offset(KEPT).limit(1)
        )
        if cutoff is not None:
            db.session.execute(delete(LogRecordRow).where(LogRecordRow.id <= cutoff))
        db.session.commit()
    except Exception:
        db.session.rollback()
        with _lock:  # back in front of anything logged meanwhile; past the bound the oldest go
            merged = [*batch, *_ring]
            _ring.clear()
            _ring.extend(merged)
        raise
    return len(batch)


def recent(workspace_id: int | None, limit: int = SHOWN) -> list[RecentError]:
    """The newest records a workspace's admin may see, across every process, newest first."""
    rows = db.session.scalars(
        select(LogRecordRow)
        .where(or_(LogRecordRow.workspace_id.is_(None), LogRecordRow.workspace_id == workspace_id))
        .order_by(LogRecordRow.id.desc())
        .limit(limit)
    )
    found = [RecentError(r.at, r.level, r.logger, r.message, r.workspace_id) for r in rows]
    with _lock:  # this process's records not written yet
        found += [e for e in _ring if e.workspace_id in (None, workspace_id)]
    return sorted(found, key=lambda e: e.at, reverse=True)[:limit]


def forget_pending() -> None:
    with _lock:
        _ring.clear()


def _forget_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    _ring.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
