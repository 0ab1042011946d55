"""PostgreSQL through psycopg (crm/pg.py): prepared statements kept across transactions that only
read, and one prepared statement whatever the size of its ids."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Integer, Select, cast, func, literal, select, text, update
from sqlalchemy.exc import DBAPIError

from crm.extensions import db
from crm.leads.models import Lead
from tests import factories
from tests.conftest import BACKEND
from tests.prepared import as_prepared, prepared_statements

# --- read-only transactions keep psycopg's prepared statements -------------------------------

postgresql_only = pytest.mark.skipif(BACKEND != "postgresql", reason="psycopg prepares on PostgreSQL only")


def _as_prepared(stmt: Select[Any]) -> str:
    """The text PostgreSQL shows of ``stmt`` prepared: its parameters numbered $1, $2…"""
    return as_prepared(str(stmt.compile(db.engine)))


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
        assert [statement for statement, _types in prepared_statements(conn)] == [wanted]


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
        prepared = prepared_statements(conn)
        conn.rollback()
    # Not one for ids that fit a smallint and one for the others.
    assert prepared == [(_as_prepared(select(Lead.name).where(Lead.id == 7)), "{integer}")]


@postgresql_only
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_checks_leave_the_statements_prepared(
    owner: factories.Person, fresh_pool: None, client: Any, path: str
) -> None:
    """compose.yaml checks every 10 s: a check that ended its transaction with a rollback made
    psycopg drop every statement prepared on the connection it took."""
    wanted = _as_prepared(_lead_names(owner.workspace_id))
    with db.engine.connect() as conn:
        for _ in range(6):
            conn.execute(_lead_names(owner.workspace_id)).all()
            conn.rollback()
    assert client.get(path).status_code in (200, 503)  # the pool's one connection, taken by the check
    with db.engine.connect() as conn:
        assert [statement for statement, _types in prepared_statements(conn)] == [wanted]
