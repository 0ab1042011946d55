"""Database helpers: conflict-ignoring inserts that the compiled cache can keep; values written into
a statement's text. What is psycopg's alone is in test_pg.py."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from crm.auth.models import Workspace
from crm.db import insert_ignoring_conflicts, utcnow, written
from crm.extensions import db
from crm.leads.models import Lead
from tests import factories


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


def test_a_written_value_is_in_the_statement_text(app: Flask) -> None:
    stmt = select(Lead.id).where(Lead.name == written("Ana")).limit(written(51))
    sql = str(stmt.compile(dialect=db.engine.dialect, compile_kwargs={"render_postcompile": True}))
    assert "LIMIT 51" in sql and "'Ana'" in sql
