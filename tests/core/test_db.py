"""Database helpers: conflict-ignoring inserts that the compiled cache can keep; prepared statements
that outlive transactions which only read; values written into a statement's text."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import Connection, Integer, Select, cast, func, literal, select, text, update
from sqlalchemy.exc import DBAPIError

from crm.auth.models import Workspace
from crm.db import insert_ignoring_conflicts, utcnow, written
from crm.extensions import db
from crm.leads.models import Lead
from tests import factories
from tests.conftest import BACKEND


def _lead_insert(phone: str) -> object:
    now = utcnow()
    return insert_ignoring_conflicts(Lead).values(
        workspace_id=1, phone=phone, name="", notes="", opt_in=False, created_at=now, updated_at=now
    )


def test_insert_ignoring_conflicts_has_a_cache_key_shared_by_its_executions(app: Flask) -> None:
    # The dialects' own on_conflict_do_nothing() can't be cached: every execution compiled afresh.
    first, second = _lead_insert("+5511999990001"), _lead_insert("+5511999990002")
    key = first._generate_cache_key()  # type: ignore[attr-defined]
    assert key is not None
    assert key == second._generate_cache_key()  # type: ignore[attr-defined]
    other_table = insert_ignoring_conflicts(Workspace).values(name="x")
    assert other_table._generate_cache_key() != key


def test_insert_ignoring_conflicts_keeps_the_first_row(owner: factories.Person) -> None:
    for name in ("First", "Second"):
        now = utcnow()
        db.session.execute(
            insert_ignoring_conflicts(Lead).values(
                workspace_id=owner.workspace_id,
                phone="+5511999990003",
                name=name,
                notes="",
                opt_in=False,
                created_at=now,
                updated_at=now,
            )
        )
    db.session.commit()
    names = db.session.scalars(select(Lead.name).where(Lead.workspace_id == owner.workspace_id)).all()
    assert names == ["First"]


# --- read-only transactions keep psycopg's prepared statements -------------------------------

postgresql_only = pytest.mark.skipif(BACKEND != "postgresql", reason="psycopg prepares on PostgreSQL only")


def _prepared(conn: Connection) -> list[str]:
    return list(conn.scalars(text("SELECT statement FROM pg_prepared_statements")))


def _lead_names(workspace_id: int) -> Select[tuple[str]]:
    return select(Lead.name).where(Lead.workspace_id == workspace_id).order_by(Lead.id)


@postgresql_only
def test_a_statement_stays_prepared_across_transactions_that_only_read(owner: factories.Person) -> None:
    with db.engine.connect() as conn:
        for _ in range(7):  # psycopg prepares a statement at its fifth run on a connection
            conn.execute(_lead_names(owner.workspace_id)).all()
            conn.rollback()  # how a request's transaction ends
        assert any("leads.name" in statement for statement in _prepared(conn))


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


def test_a_written_value_is_in_the_statement_text(app: Flask) -> None:
    stmt = select(Lead.id).where(Lead.name == written("Ana")).limit(written(51))
    sql = str(stmt.compile(dialect=db.engine.dialect, compile_kwargs={"render_postcompile": True}))
    assert "LIMIT 51" in sql and "'Ana'" in sql


@postgresql_only
def test_a_connection_lost_in_a_read_rolls_back_quietly(owner: factories.Person) -> None:
    with db.engine.connect() as conn:
        conn.execute(_lead_names(owner.workspace_id)).all()
        conn.invalidate()  # as when the server goes away in the middle of a transaction
        conn.rollback()
    assert db.session.scalar(select(func.count()).select_from(Lead)) == 0  # the pool goes on
