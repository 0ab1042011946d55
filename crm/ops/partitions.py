"""Monthly partitions of ``messages`` on PostgreSQL (SQLite keeps a plain table).

Migration 0017 made ``messages`` a table partitioned by RANGE (created_at), one partition per
month named ``messages_pYYYY_MM`` (UTC months) plus ``messages_default`` for rows outside every
month. ``ensure_partitions`` creates the partitions of this month and the next ``MONTHS_AHEAD``
months before any message needs them: the worker runs it on start and every day.

A partition is created straight away (``CREATE TABLE … PARTITION OF``) unless the default
partition already holds rows of that month (a message dated in the future by a provider's clock,
say): then the new month's table is filled with those rows, which leave the default partition in
the same transaction, and attached. Either way each month is one short transaction, and a second
process doing the same at the same time waits on the lock and then finds the work done.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from crm.extensions import db

log = logging.getLogger(__name__)

MONTHS_AHEAD = 3
PARENT = "messages"
DEFAULT = "messages_default"
NAME = re.compile(r"messages_p(\d{4})_(\d{2})\Z")
# Serialises partition maintenance across processes (any constant; pg_advisory_xact_lock key).
LOCK_KEY = 0x5A_50_41_52  # "ZPAR"
LOCK_TIMEOUT_MS = 3000
STRAYS = "DELETE FROM messages_default WHERE created_at >= :start AND created_at < :end"


def month_start(year: int, month: int) -> datetime:
    """The first instant (UTC) of a month; ``month`` may run past 12 or below 1."""
    return datetime(year + (month - 1) // 12, (month - 1) % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"messages_p{start:%Y_%m}"


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime | None  # None: the default partition
    rows: int  # the planner's estimate (reltuples), -1 when never analysed

    @property
    def end(self) -> datetime | None:
        return None if self.start is None else month_start(self.start.year, self.start.month + 1)


def is_partitioned(connection: Connection) -> bool:
    if connection.dialect.name != "postgresql":
        return False
    kind = connection.execute(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:name)"), {"name": PARENT}
    ).scalar()
    return kind == "p"


def list_partitions(connection: Connection) -> list[Partition]:
    """The partitions of ``messages``, oldest month first, the default partition last."""
    if not is_partitioned(connection):
        return []
    rows = connection.execute(
        text(
            "SELECT c.relname, c.reltuples FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:name)"
        ),
        {"name": PARENT},
    ).all()
    months, default = [], []
    for name, tuples in rows:
        match = NAME.match(name)
        if match:
            months.append(Partition(name, month_start(int(match[1]), int(match[2])), int(tuples)))
        else:
            default.append(Partition(name, None, int(tuples)))
    return sorted(months, key=lambda p: p.start or datetime.min.replace(tzinfo=UTC)) + default


def ensure_partitions(now: datetime | None = None, months_ahead: int = MONTHS_AHEAD) -> list[str]:
    """Create the missing partitions from this month to ``months_ahead`` months later; the names
    created. Nothing to do (an empty list) on SQLite or before migration 0017."""
    now = now or datetime.now(UTC)
    created: list[str] = []
    with db.engine.connect() as connection:
        partitioned = is_partitioned(connection)
        connection.rollback()  # each month below is a transaction of its own
        if not partitioned:
            return created
        for ahead in range(months_ahead + 1):
            start = month_start(now.year, now.month + ahead)
            try:
                if _create_month(connection, start):
                    created.append(partition_name(start))
            except OperationalError as exc:  # lock_timeout: the next run tries again
                log.warning("messages: partition %s not created now: %s", partition_name(start), exc.orig)
    if created:
        log.info("messages: created partitions %s", ", ".join(created))
    return created


def _create_month(connection: Connection, start: datetime) -> bool:
    """One month's partition in its own transaction; False when it was already there."""
    name = partition_name(start)
    end = month_start(start.year, start.month + 1)
    bounds = {"start": start, "end": end}
    with connection.begin():
        # Creating a partition locks ``messages`` for a moment; behind a long transaction it would
        # make every message write wait in line: give up instead (it is retried daily, months ahead).
        connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'"))
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        if connection.execute(text("SELECT to_regclass(:name)"), {"name": name}).scalar() is not None:
            return False
        stray = connection.execute(
            text("SELECT count(*) FROM messages_default WHERE created_at >= :start AND created_at < :end"),
            bounds,
        ).scalar()
        values = f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        if not stray:
            connection.execute(text(f"CREATE TABLE {name} PARTITION OF {PARENT} {values}"))
            return True
        # The default partition holds rows of this month: they move into the new table, which is
        # attached once they have left (attaching checks the default partition holds none).
        connection.execute(
            text(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        )
        move = f"WITH moved AS ({STRAYS} RETURNING *) INSERT INTO {name} SELECT * FROM moved"  # noqa: S608
        connection.execute(text(move), bounds)  # (the name is made from a date, never from input)
        connection.execute(text(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} {values}"))
        log.warning("messages: %s rows of %s moved out of the default partition into %s", stray, start, name)
        return True
