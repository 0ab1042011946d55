"""PostgreSQL through psycopg (crm/pg.py): prepared statements kept across transactions that only
read, one prepared statement whatever the size of its ids, and a thread's older pages planned
once per connection."""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Integer, Select, cast, event, func, literal, select, text, update
from sqlalchemy.exc import DBAPIError

from crm.db import utcnow
from crm.extensions import db
from crm.inbox import services as inbox
from crm.leads.models import Lead
from crm.pg import ordered_generic_plans
from tests import factories
from tests.conftest import BACKEND

# --- read-only transactions keep psycopg's prepared statements -------------------------------

postgresql_only = pytest.mark.skipif(BACKEND != "postgresql", reason="psycopg prepares on PostgreSQL only")


def _prepared(conn: Connection) -> list[tuple[str, str]]:
    """The statements prepared on this connection, with their parameters' types."""
    rows = conn.execute(text("SELECT statement, parameter_types::text FROM pg_prepared_statements"))
    return [(row.statement, row.parameter_types) for row in rows]


def _as_prepared(stmt: Select[Any]) -> str:
    """The text PostgreSQL shows of ``stmt`` prepared: its parameters numbered $1, $2…"""
    numbers = itertools.count(1)
    return re.sub(r"%\(\w+\)s", lambda _m: f"${next(numbers)}", str(stmt.compile(db.engine)))


@pytest.fixture
def fresh_pool(app: object) -> None:
    """No pooled connection that earlier tests left statements prepared on (a read-only transaction
    keeps them, and emptying the tables doesn't drop them)."""
    db.session.remove()
    db.engine.dispose()


def _lead_names(workspace_id: int) -> Select[tuple[str]]:
    return select(Lead.name).where(Lead.workspace_id == workspace_id).order_by(Lead.id)


@postgresql_only
def test_a_statement_stays_prepared_across_transactions_that_only_read(
    owner: factories.Person, fresh_pool: None
) -> None:
    wanted = _as_prepared(_lead_names(owner.workspace_id))
    with db.engine.connect() as conn:
        for _ in range(7):  # psycopg prepares a statement at its sixth run on a connection
            conn.execute(_lead_names(owner.workspace_id)).all()
            conn.rollback()  # how a request's transaction ends
        assert [statement for statement, _types in _prepared(conn)] == [wanted]


@postgresql_only
def test_a_transaction_that_wrote_still_rolls_back(owner: factories.Person) -> None:
    factories.lead(owner, phone="+5511988880001", name="Kept")
    with db.engine.connect() as conn:
        for _ in range(6):
            conn.execute(_lead_names(owner.workspace_id)).all()
            conn.rollback()
        conn.execute(update(Lead).values(name="Updated"))
        conn.execute(_lead_names(owner.workspace_id)).all()  # a read after the write
        conn.rollback()
        assert conn.scalars(_lead_names(owner.workspace_id)).all() == ["Kept"]
        conn.execute(text("UPDATE leads SET name = 'Renamed'"))  # text: whatever it does, rolled back
        conn.rollback()
        assert conn.scalars(_lead_names(owner.workspace_id)).all() == ["Kept"]
        conn.rollback()
    # The same through the session, as a request that flushed and then failed leaves it.
    db.session.remove()
    db.session.add(Lead(workspace_id=owner.workspace_id, phone="+5511988880002", name="Flushed only"))
    db.session.flush()
    db.session.execute(_lead_names(owner.workspace_id)).all()
    db.session.remove()
    assert db.session.scalars(_lead_names(owner.workspace_id)).all() == ["Kept"]


@postgresql_only
def test_a_failed_read_rolls_back(owner: factories.Person) -> None:
    db.session.remove()
    with pytest.raises(DBAPIError):
        db.session.execute(select(cast(literal("not a number"), Integer))).all()
    db.session.remove()  # the aborted transaction rolls back; the connection works on
    assert db.session.scalar(select(func.count()).select_from(Lead)) == 0


@postgresql_only
def test_a_connection_lost_in_a_read_rolls_back_quietly(owner: factories.Person) -> None:
    with db.engine.connect() as conn:
        conn.execute(_lead_names(owner.workspace_id)).all()
        conn.invalidate()  # as when the server goes away in the middle of a transaction
        conn.rollback()
    assert db.session.scalar(select(func.count()).select_from(Lead)) == 0  # the pool goes on


# --- one prepared statement whatever the size of its ids ---------------------------------------


@postgresql_only
def test_ints_of_every_size_reach_postgresql_unchanged(owner: factories.Person) -> None:
    with db.engine.connect() as conn:
        for value, kind in (
            (0, "integer"),
            (-32768, "integer"),
            (32767, "integer"),
            (40_000, "integer"),
            (2**31 - 1, "integer"),
            (-(2**31), "integer"),
            (2**31, "bigint"),
            (2**63 - 1, "bigint"),
            (-(2**70), "numeric"),
            (True, "boolean"),  # a bool is an int to Python, not to psycopg
        ):
            assert conn.execute(text("SELECT :v, pg_typeof(:v)::text"), {"v": value}).one() == (value, kind)
        ids = conn.execute(text("SELECT :v, pg_typeof(:v)::text"), {"v": [3, None, 40_000]}).one()
        assert ids == ([3, None, 40_000], "integer[]")
        assert conn.execute(text("SELECT pg_typeof(:v)::text"), {"v": [3, 4]}).scalar() == "integer[]"
        conn.rollback()


@postgresql_only
def test_one_prepared_statement_serves_ids_of_every_size(owner: factories.Person, fresh_pool: None) -> None:
    with db.engine.connect() as conn:
        for lead_id in (7, 40_000) * 6:  # psycopg prepares a statement at its sixth run
            conn.execute(select(Lead.name).where(Lead.id == lead_id)).all()
            conn.rollback()
        prepared = _prepared(conn)
        conn.rollback()
    # Not one for ids that fit a smallint and one for the others.
    assert prepared == [(_as_prepared(select(Lead.name).where(Lead.id == 7)), "{integer}")]


# --- a thread's older pages are planned once per connection ------------------------------------


def _older_page_cursor(owner: factories.Person) -> tuple[int, str]:
    conversation_id = factories.inbound(factories.sandbox_account(owner), text="m0")
    start = utcnow() - timedelta(hours=2)  # m0 arrived now: the newest
    for i in range(1, 60):
        at = start + timedelta(seconds=i)
        factories.stored_message(conversation_id, f"m{i}", provider_message_id=f"older-{i}", created_at=at)
    cursor = inbox.thread_page(owner.workspace_id, conversation_id, None, limit=20).next_cursor
    assert cursor is not None
    return conversation_id, cursor


def _settings() -> tuple[str, str]:
    row = db.session.execute(
        select(func.current_setting("plan_cache_mode"), func.current_setting("enable_sort"))
    ).one()
    return row[0], row[1]


@postgresql_only
def test_an_older_thread_page_is_planned_once_per_connection(owner: factories.Person) -> None:
    conversation_id, cursor = _older_page_cursor(owner)
    db.session.remove()
    db.engine.dispose()  # from here on one connection, which each "request" below gets back
    for _ in range(8):
        page = inbox.thread_page(owner.workspace_id, conversation_id, cursor, limit=20)
        assert [m.text for m in page.items] == [f"m{i}" for i in range(40, 20, -1)]
        assert _settings() == ("auto", "on")
        db.session.remove()  # a request's end: it only read, so it commits and keeps what is prepared
    plans = db.session.execute(
        text(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%messages.created_at <=%'"
        )
    ).all()
    db.session.remove()
    # Prepared at its sixth run (psycopg), then never planned for its values again.
    [(generic, custom)] = plans
    assert generic >= 1 and custom == 0


@postgresql_only
def test_a_plan_made_once_is_made_without_sorting_and_the_settings_come_back(owner: factories.Person) -> None:
    db.session.execute(select(func.set_config("plan_cache_mode", "force_custom_plan", True))).all()
    before = _settings()
    with ordered_generic_plans():
        inside = _settings()
    assert inside == ("force_generic_plan", "off")
    assert _settings() == before == ("force_custom_plan", "on")
    db.session.remove()


def _set_configs() -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "set_config" in statement:
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


set_configs = contextlib.contextmanager(_set_configs)


def test_a_first_page_and_sqlite_change_no_setting(owner: factories.Person) -> None:
    conversation_id = factories.inbound(factories.sandbox_account(owner), text="Oi")
    with set_configs() as first_page:
        inbox.thread_page(owner.workspace_id, conversation_id, None)
    with set_configs() as not_wanted, ordered_generic_plans(False):
        pass
    with set_configs() as wanted, ordered_generic_plans():
        pass
    assert first_page == not_wanted == []
    assert len(wanted) == (0 if BACKEND == "sqlite" else 2)  # the settings made, then put back
    db.session.remove()


@postgresql_only
def test_the_settings_come_back_after_an_error_in_python(owner: factories.Person) -> None:
    with pytest.raises(LookupError), ordered_generic_plans():
        raise LookupError("a page's rows could not be shown")
    assert _settings() == ("auto", "on")  # the transaction goes on, planned as before
    db.session.remove()


@postgresql_only
def test_the_plan_made_once_for_an_older_page_reads_the_index_in_order(owner: factories.Person) -> None:
    conversation_id, _cursor = _older_page_cursor(owner)
    statement = (
        "PREPARE older_page(int, int, timestamptz, int) AS SELECT id FROM messages"
        " WHERE workspace_id = $1 AND conversation_id = $2 AND created_at <= $3"
        " AND (created_at < $3 OR created_at = $3 AND id < $4)"
        " ORDER BY created_at DESC, id DESC LIMIT 21"
    )
    connection = db.session.connection()
    connection.exec_driver_sql(statement)
    try:
        with ordered_generic_plans():
            explain = f"EXPLAIN EXECUTE older_page({owner.workspace_id:d}, {conversation_id:d}, now(), 0)"
            plan = "\n".join(connection.exec_driver_sql(explain).scalars())
    finally:
        connection.exec_driver_sql("DEALLOCATE older_page")
        db.session.remove()
    assert "Sort" not in plan and "conversation_id_created_at_id" in plan, plan
