"""One archive run per workspace at a time, across processes and machines.

A run resumes or abandons whatever an earlier run left unfinished; that is only safe when no
other run is working on it. The lock dies with its holder (a PostgreSQL session's advisory lock,
or a ``flock`` on a file of the instance folder in embedded mode), so a killed run never leaves
the workspace locked.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import text

from crm.errors import Conflict
from crm.extensions import db

LOCK_KEY = 0x5A415243  # "ZARC": pg_try_advisory_lock(key, workspace id)


class ArchiveBusy(Conflict):
    code = "archive_busy"

    def default_message(self) -> str:
        return _("Another archive run of this workspace is in progress; try again when it ends.")


@contextmanager
def workspace_run_lock(workspace_id: int) -> Iterator[None]:
    """Held for the whole run; ArchiveBusy at once if another process holds it."""
    engine = db.engine
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            key = {"key": LOCK_KEY, "workspace": workspace_id}
            if not conn.execute(text("SELECT pg_try_advisory_lock(:key, :workspace)"), key).scalar():
                raise ArchiveBusy()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key, :workspace)"), key)
        return
    folder = Path(current_app.config["INSTANCE_PATH"]) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"archive-w{workspace_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiveBusy() from None
        yield
    finally:
        os.close(fd)  # releases the lock
