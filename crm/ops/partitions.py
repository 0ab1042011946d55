"""Monthly partitions of ``messages`` on PostgreSQL (SQLite keeps a plain table).

Migration 0017 made ``messages`` a table partitioned by RANGE (created_at): one partition per
month named ``messages_pYYYY_MM`` (UTC months), with ``messages_past`` from MINVALUE up to the
first month and ``messages_future`` from the end of the last month up to MAXVALUE, so every time
has a partition and the partitions are in order (no DEFAULT partition, which would keep
PostgreSQL from reading a conversation's partitions newest first and stopping once a page is
full). ``ensure_partitions`` carves the months from this one to ``MONTHS_AHEAD`` later out of
``messages_future`` before any message needs them: the worker runs it on start and every day.
``months_back`` carves earlier months out of ``messages_past`` (``flask crm partitions``, before
importing old history, say).

Carving a month is one short transaction: the catch-all partition is detached, the month's table
created, any rows of that month moved from the catch-all into it, and the catch-all attached
again with the rest of its range. Other writers wait for that moment (it takes the table's
lock, with a ``lock_timeout`` so a long transaction makes it give up and try again the next day
instead of making every message write queue behind it); a second process doing the same waits
on an advisory lock and then finds the work done.
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
PAST = "messages_past"
FUTURE = "messages_future"
NAME = re.compile(r"messages_p(\d{4})_(\d{2})\Z")
# Serialises partition maintenance across processes (any constant; pg_advisory_xact_lock key).
LOCK_KEY = 0x5A_50_41_52  # "ZPAR"
LOCK_TIMEOUT_MS = 3000


def month_start(year: int, month: int) -> datetime:
    """The first instant (UTC) of a month; ``month`` may run past 12 or below 1."""
    return datetime(year + (month - 1) // 12, (month - 1) % 12 + 1, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return month_start(start.year, start.month + 1)


def partition_name(start: datetime) -> str:
    return f"messages_p{start:%Y_%m}"


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime | None  # None: messages_past or messages_future
    rows: int  # the planner's estimate (reltuples), -1 when never analysed


def is_partitioned(connection: Connection) -> bool:
    if connection.dialect.name != "postgresql":
        return False
    kind = connection.execute(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:name)"), {"name": PARENT}
    ).scalar()
    return kind == "p"


def list_partitions(connection: Connection) -> list[Partition]:
    """The partitions of ``messages`` in time order: messages_past, the months, messages_future."""
    if not is_partitioned(connection):
        return []
    rows = connection.execute(
        text(
            "SELECT c.relname, c.reltuples FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:name)"
        ),
        {"name": PARENT},
    ).all()
    months, edges = [], {}
    for name, tuples in rows:
        match = NAME.match(name)
        if match:
            months.append(Partition(name, month_start(int(match[1]), int(match[2])), int(tuples)))
        else:
            edges[name] = Partition(name, None, int(tuples))
    months.sort(key=lambda p: p.start or datetime.min.replace(tzinfo=UTC))
    return [*([edges[PAST]] if PAST in edges else []), *months, *([edges[FUTURE]] if FUTURE in edges else [])]


def ensure_partitions(
    now: datetime | None = None, months_ahead: int = MONTHS_AHEAD, months_back: int = 0
) -> list[str]:
    """Make sure every month from ``months_back`` before ``now`` to ``months_ahead`` after it has
    its own partition; the names created, in the order they were. Nothing to do (an empty list)
    on SQLite or before migration 0017. A month that could not be carved now (the table was
    locked) is logged and left for the next run."""
    now = now or datetime.now(UTC)
    this_month = month_start(now.year, now.month)
    created: list[str] = []
    with db.engine.connect() as connection:
        partitioned = is_partitioned(connection)
        connection.rollback()  # each month below is a transaction of its own
        if not partitioned:
            return created
        try:
            _carve_forward(connection, month_start(now.year, now.month + months_ahead + 1), created)
            _carve_back(connection, month_start(this_month.year, this_month.month - months_back), created)
        except OperationalError as exc:  # lock_timeout: the next run goes on from here
            log.warning("messages: partitions not all made now (%s made): %s", len(created), exc.orig)
    if created:
        log.info("messages: created partitions %s", ", ".join(created))
    return created


def _months(connection: Connection) -> list[datetime]:
    return [p.start for p in list_partitions(connection) if p.start is not None]


def _carve_forward(connection: Connection, until: datetime, created: list[str]) -> None:
    """Months out of messages_future, oldest first, until the months reach ``until``."""
    while True:
        with connection.begin():
            _lock(connection)
            months = _months(connection)
            start = next_month(months[-1])
            if start >= until:
                return
            end = next_month(start)
            _carve(connection, FUTURE, start, end, f"FROM ('{end.isoformat()}') TO (MAXVALUE)")
        created.append(partition_name(start))


def _carve_back(connection: Connection, until: datetime, created: list[str]) -> None:
    """Months out of messages_past, newest first, until the months start at ``until``."""
    while True:
        with connection.begin():
            _lock(connection)
            months = _months(connection)
            if months[0] <= until:
                return
            start = month_start(months[0].year, months[0].month - 1)
            _carve(connection, PAST, start, months[0], f"FROM (MINVALUE) TO ('{start.isoformat()}')")
        created.append(partition_name(start))


def _lock(connection: Connection) -> None:
    # Carving locks ``messages`` for a moment; behind a long transaction it would make every
    # message write wait in line: give up instead.
    connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'"))
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})


def _carve(connection: Connection, edge: str, start: datetime, end: datetime, edge_rest: str) -> None:
    """The month [start, end) out of the catch-all partition ``edge``, which keeps ``edge_rest``.
    Every name and bound here is made from a date or a constant, never from input."""
    name = partition_name(start)
    connection.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {edge}"))
    connection.execute(
        text(
            f"CREATE TABLE {name} PARTITION OF {PARENT} "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
    )
    move = (  # the rows of that month the catch-all held (a provider's clock ahead, old history)
        f"WITH moved AS (DELETE FROM {edge} WHERE created_at >= :start AND created_at < :end "  # noqa: S608
        f"RETURNING *) INSERT INTO {PARENT} SELECT * FROM moved"
    )
    moved = connection.execute(text(move), {"start": start, "end": end}).rowcount
    connection.execute(text(f"ALTER TABLE {PARENT} ATTACH PARTITION {edge} FOR VALUES {edge_rest}"))
    if moved:
        log.warning("messages: %s rows of %s moved out of %s into %s", moved, f"{start:%Y-%m}", edge, name)
