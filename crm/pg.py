"""PostgreSQL through psycopg: a statement prepared once per connection and kept, whatever the
size of its ids.

On the inbox's database (bench/inbox.py) planning a statement over the monthly partitions of
messages takes longer than running it, so each plan saved is time taken off a request and a
burst of work that a busy core can stretch past 5 ms."""

from __future__ import annotations

import functools
import logging
from typing import Any

from sqlalchemy import Select, event
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)


def listen(engine: Engine) -> None:
    """What every psycopg engine of the app does (crm.db.setup_db)."""
    event.listen(engine, "begin", _reading_only)
    event.listen(engine, "before_cursor_execute", _note_what_runs)
    event.listen(engine, "rollback", _commit_what_only_read)
    event.listen(engine, "connect", _ints_from_int4)


# --- prepared statements last beyond read-only transactions (psycopg) --------------------------
#
# psycopg prepares a statement on a connection once it has run five times there, so PostgreSQL
# plans it once instead of on every run (planning a statement over the monthly partitions of
# messages takes longer than running it). But psycopg forgets every prepared statement on
# ROLLBACK (a rolled-back transaction may have dropped what they refer to), and a request that
# only read ends its transaction with one. A transaction that ran nothing but SELECTs built by
# SQLAlchemy (no text, no INSERT, UPDATE or DELETE) is committed instead, which leaves the data
# as a rollback would; anything else rolls back as before. That holds while no such SELECT writes
# by other means (a function that writes or notifies, a CTE that inserts) and no write goes
# through the driver's own connection beside text statements: none does.

_ONLY_READ = "crm_only_read"


def _reading_only(conn: Connection) -> None:
    conn.info[_ONLY_READ] = True


def built_select(context: Any) -> bool:
    """Whether the statement a ``before_cursor_execute`` event is about is a SELECT built by
    SQLAlchemy (not text, not a write)."""
    return isinstance(getattr(context.compiled, "statement", None), Select)


def _note_what_runs(
    conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    if not built_select(context):
        conn.info[_ONLY_READ] = False


def _commit_what_only_read(conn: Connection) -> None:
    if conn.invalidated or conn.closed:  # lost mid-transaction: nothing to commit, nor to ask it
        return
    if not conn.info.pop(_ONLY_READ, False):
        return
    from psycopg.pq import TransactionStatus

    dbapi_connection = conn.connection.dbapi_connection
    if dbapi_connection is None or dbapi_connection.info.transaction_status != TransactionStatus.INTRANS:
        return  # a failed transaction (or none): it rolls back
    try:
        dbapi_connection.commit()  # the rollback that follows finds no transaction and does nothing
    except Exception:  # the connection broke: the rollback that follows sees it
        log.debug("committing a read-only transaction failed", exc_info=True)


# --- one prepared statement per statement, whatever the size of its ids (psycopg) -------------
#
# psycopg sends a Python int as the smallest type that holds it: a conversation 300 as smallint,
# a conversation 40,000 as integer. Its prepared statements are keyed by the parameters' types
# too, so one statement became one prepared statement per mix of sizes, each planned afresh on its
# first ten runs on each connection (bench/inbox.py: the thread's messages and the conversation's
# row planned twice as often as the others). Ints that fit in an integer are sent as one; bigger
# ones as psycopg sends them (bigint, then numeric). PostgreSQL casts an integer up where a bigint
# is wanted, and SQLAlchemy's statements cast their parameters to the column's type anyway.


@functools.cache
def _int_dumpers() -> tuple[type, ...]:
    """psycopg's dumpers of ``int`` (binary, which SQLAlchemy's parameters take, and text, which
    lists of ints take), with smallint left out. Built on first use: psycopg is imported only where
    PostgreSQL is used."""
    import psycopg
    from psycopg.adapt import Dumper, PyFormat
    from psycopg.pq import Format

    def dumper(pq_format: Format) -> type:
        py_format = PyFormat.from_pq(pq_format)
        psycopg_dumper = psycopg.adapters.get_dumper(int, py_format)  # psycopg's own, by size

        class IntsFromInt4(Dumper):
            format = pq_format

            def __init__(self, cls: type, context: Any = None) -> None:
                super().__init__(cls, context)
                by_size = psycopg_dumper(int, context)  # asked once per range, not per value
                self._int4 = by_size.upgrade(2**15, py_format)
                self._int8 = by_size.upgrade(2**31, py_format)
                self._numeric = by_size.upgrade(2**63, py_format)

            def dump(self, obj: Any) -> Any:  # pragma: no cover - psycopg asks upgrade() first
                raise TypeError("a dispatcher: upgrade() gives the dumper")

            def get_key(self, obj: int, format: Any) -> Any:
                return self.upgrade(obj, format).cls

            def upgrade(self, obj: int, format: Any) -> Any:
                if -(2**31) <= obj < 2**31:
                    return self._int4
                return self._int8 if -(2**63) <= obj < 2**63 else self._numeric

        return IntsFromInt4

    return dumper(Format.TEXT), dumper(Format.BINARY)  # the last one registered is the default


def _ints_from_int4(dbapi_connection: Any, _connection_record: Any) -> None:
    for dumper in _int_dumpers():
        dbapi_connection.adapters.register_dumper(int, dumper)
