"""Database helpers: engine tuning, time, and work that must wait for a commit."""

from __future__ import annotations

import functools
import logging
import os
import re
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from flask import Flask
from sqlalchemy import ColumnElement, DateTime, String, Table, event, literal
from sqlalchemy.dialects.postgresql import dml as pg_dml
from sqlalchemy.dialects.sqlite import dml as sqlite_dml
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

from crm import pg
from crm.extensions import db

log = logging.getLogger(__name__)

T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops tzinfo; we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type[datetime]:
        return datetime

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _lower(value: Any) -> str | None:
    if value is None:
        return None
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return text.lower()


# Searches ignore accents: "joao" finds "João", "acougue" finds "Açougue". The same letters are
# replaced in SQL (translate(), on PostgreSQL in the leads' trigram index, migrations 0022 and
# 0024) and in Python (the text searched for). The accents written apart from their letter
# (Unicode's decomposed form, as some systems save "João") are deleted: they have no letter in
# FOLD_TO.
# Each letter here costs every lead an import writes a little (translate() reads the list for
# each character), so the list holds the letters of Portuguese, Spanish and French.
FOLD_FROM = "áàâãäåāçćčéèêëēęěíìîïīñńóòôõöøōśšúùûüūůýÿźżž" + "\u0300\u0301\u0302\u0303\u0308\u0327"
FOLD_TO = "aaaaaaaccceeeeeeeiiiiinnooooooossuuuuuuyyzzz"


class folded(FunctionElement[str]):  # noqa: N801 (used as a function)
    """The SQL of ``fold``: the letters as literals, so that PostgreSQL matches the expression
    with an index on it (the leads' trigram index, migration 0024, has the same text)."""

    type = String()
    name = "folded"
    inherit_cache = True


def _translated(text: str) -> str:
    return f"translate(lower({text}), '{FOLD_FROM}', '{FOLD_TO}')"


@compiles(folded)
def _folded(element: folded, compiler: Any, **kw: Any) -> str:
    return _translated(compiler.process(element.clauses, **kw))


@compiles(folded, "postgresql")
def _folded_on_postgresql(element: folded, compiler: Any, **kw: Any) -> str:
    # translate() compares each character with each letter of the list, ~50 comparisons a
    # character; a text of one byte per character (ASCII in UTF-8, which the letters above need)
    # has none of the letters, so lower() alone gives the same text: a million names fold in
    # 0.6 s instead of 2.8-3.1 s, which every lead written and every search's recheck pay.
    text = compiler.process(element.clauses, **kw)
    ascii_only = f"octet_length({text}) = char_length({text})"
    return f"CASE WHEN {ascii_only} THEN lower({text}) ELSE {_translated(text)} END"


@functools.lru_cache(maxsize=8)
def _translation(source: str, target: str) -> dict[int, int | None]:
    # PostgreSQL's rules: a letter's first place in ``source`` counts; letters past the end of
    # ``target`` are deleted.
    table: dict[int, int | None] = {}
    for i, ch in enumerate(source):
        table.setdefault(ord(ch), ord(target[i]) if i < len(target) else None)
    return table


_FOLD = _translation(FOLD_FROM, FOLD_TO)


def fold(text: str) -> str:
    """``text`` as searches compare it: lower case, without accents."""
    return text.lower().translate(_FOLD)


def _translate(value: Any, source: Any, target: Any) -> str | None:
    if value is None or source is None or target is None:
        return None
    return str(value).translate(_translation(str(source), str(target)))


class right(FunctionElement[str]):  # noqa: N801 (SQL's name)
    """PostgreSQL's ``right(text, n)``, the last n characters; ``substr(text, -n)`` on SQLite,
    where RIGHT is a keyword. Give n as a literal column: an index on the expression holds the
    number, not a parameter."""

    type = String()
    name = "right"
    inherit_cache = True


@compiles(right)
def _right(element: right, compiler: Any, **kw: Any) -> str:
    return f"right({compiler.process(element.clauses, **kw)})"


@compiles(right, "sqlite")
def _right_on_sqlite(element: right, compiler: Any, **kw: Any) -> str:
    text, count = element.clauses
    return f"substr({compiler.process(text, **kw)}, -{compiler.process(count, **kw)})"


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL lets the web threads read while the embedded worker writes; busy_timeout waits
    # for a lock instead of failing at once; foreign keys are off by default in SQLite.
    # SQLite's own lower() changes only A-Z, so "Érica" stayed "Érica" and a search for "érica"
    # (lower-cased in Python) missed it: Python's lower() replaces it, as PostgreSQL's handles
    # every letter. No SQLite index uses lower(), so nothing stored depends on the old one.
    dbapi_connection.create_function("lower", 1, _lower, deterministic=True)
    # PostgreSQL's translate(), which searches use (crm.db.folded); no SQLite index uses it.
    dbapi_connection.create_function("translate", 3, _translate, deterministic=True)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# Engines whose pooled connections a forked child must not use: they are its parent's (gunicorn
# forks its workers after `flask crm serve` has run the migrations, say). The child starts with an
# empty pool; the parent's connections stay open for the parent.
_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    for engine in list(_engines):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_connections_after_fork)


def setup_db(app: Flask) -> None:
    db.init_app(app)
    with app.app_context():
        engine: Engine = db.engine
        _engines.add(engine)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        elif engine.dialect.driver == "psycopg":
            pg.listen(engine)


def written(value: T) -> ColumnElement[T]:
    """``value`` written into the statement's text instead of sent as a parameter, for a value
    from a small set (a LIMIT, a status): a prepared statement's generic plan then estimates it
    as a plan made for the value does. Against an unknown LIMIT or status the generic plan looks
    dearer, and PostgreSQL goes on planning the statement afresh on every run."""
    return literal(value, literal_execute=True)


# --- work that runs only once the current transaction has committed -------------------------

_PENDING_KEY = "crm_after_commit"


def after_commit(callback: Callable[[], None], session: Session | None = None) -> None:
    """Run ``callback`` after the session's transaction commits; drop it on rollback.

    Tasks and realtime events are announced only for data that is really there: a task
    enqueued before the commit could run against rows that a rollback then erases.
    """
    session = db.session() if session is None else session
    session.info.setdefault(_PENDING_KEY, []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, [])
    for callback in pending:
        try:
            callback()
        except Exception:  # the data is committed; a failed follow-up is logged, and reconcilers retry
            log.exception("after-commit callback failed")


@event.listens_for(Session, "after_rollback")
def _drop_after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


class _PGDoNothing(pg_dml.OnConflictDoNothing):
    _traverse_internals = []  # bare, with no target: nothing in it varies, so it caches


class _PGInsertIgnoring(pg_dml.Insert):
    inherit_cache = True  # SQLAlchemy can't cache a dialect INSERT with ON CONFLICT: this one can


class _SQLiteDoNothing(sqlite_dml.OnConflictDoNothing):
    _traverse_internals = []


class _SQLiteInsertIgnoring(sqlite_dml.Insert):
    inherit_cache = True


def insert_ignoring_conflicts(model: type[Any] | Table) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite alike.

    Uniqueness is decided by the database's constraints, never by a check-then-insert, so two
    concurrent writers of the same row end with one row and no error. The statement is built so
    that SQLAlchemy's compiled cache can keep it: the dialects' own ``on_conflict_do_nothing()``
    makes every execution compile afresh (about 1 ms each on the ingest hot path).
    """
    stmt: Any
    if db.session.get_bind().dialect.name == "postgresql":
        stmt = _PGInsertIgnoring(model)
        stmt._post_values_clause = _PGDoNothing()
    else:
        stmt = _SQLiteInsertIgnoring(model)
        stmt._post_values_clause = _SQLiteDoNothing()
    return stmt


LIKE_ESCAPE = "\\"


def like_escaped(text: str) -> str:
    """``text`` for a LIKE pattern, matched literally (its ``%`` and ``_`` are not wildcards);
    use with ``.like(pattern, escape=LIKE_ESCAPE)``."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def commit_without_waiting_for_disk() -> None:
    """Commit without waiting for the WAL flush (PostgreSQL ``synchronous_commit = off`` for this
    transaction only): for bookkeeping a crash may lose without harm, such as an unread counter
    reset when a conversation is opened. Never for messages, sends or anything a client was told
    is stored. A busy disk otherwise makes each such click wait for an fsync."""
    from sqlalchemy import text

    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SET LOCAL synchronous_commit TO OFF"))
    db.session.commit()


MESSAGE_PARTITION = re.compile(r"messages_(p\d{4}_\d{2}|past|future)\Z")

# Indexes that migrations create with what the models can't say portably (PostgreSQL trigram
# and expression indexes for searching leads): schema comparisons must neither drop nor expect them.
DATABASE_ONLY_INDEXES = frozenset(
    {"ix_leads_search_fold_trgm", "ix_leads_workspace_id_phone_tail", "ix_leads_workspace_id_email"}
)

# Foreign keys that PostgreSQL checks with triggers, once per statement, instead of once per row
# (migration 0023): the models keep them (SQLite has them, and the ORM joins by them).
DATABASE_CHECKED_KEYS = frozenset({"fk_leads_workspace_id_workspaces", "fk_lead_tags_workspace_id_leads"})


def compared_by_autogenerate(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's ``include_object``: everything but the WhatsApp Web session store (whatsmeow_*
    tables, written by the gateway's library in scaled mode), the monthly partitions of
    ``messages`` on PostgreSQL (crm.ops.partitions), the database-only indexes and the keys
    PostgreSQL checks with triggers."""
    if type_ == "table" and name and (name.startswith("whatsmeow_") or MESSAGE_PARTITION.match(name)):
        return False
    if type_ == "foreign_key_constraint" and name in DATABASE_CHECKED_KEYS:
        return False
    return not (type_ == "index" and name in DATABASE_ONLY_INDEXES)
