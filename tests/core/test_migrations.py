"""Migrations apply from empty on SQLite and PostgreSQL, and match the models exactly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from sqlalchemy import create_engine, inspect, text

from crm import create_app
from crm.db import compared_by_autogenerate
from crm.extensions import db
from tests.conftest import make_test_config
from tests.services import require_service


def _upgrade_and_diff(url: str, tmp_path: Path) -> list[object]:
    from flask_migrate import downgrade, upgrade

    app = create_app(make_test_config(url, tmp_path))
    with app.app_context():
        upgrade()
        with db.engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": compared_by_autogenerate}
            )
            diff = compare_metadata(context, db.metadata)
            tables = set(inspect(conn).get_table_names())
        assert {
            "workspaces",
            "users",
            "memberships",
            "user_sessions",
            "api_tokens",
            "whatsapp_accounts",
            "leads",
            "conversations",
            "messages",
        } <= tables
        downgrade(revision="base")
        with db.engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
        db.engine.dispose()
    return list(diff)


def test_sqlite_migrations_match_the_models(tmp_path: Path) -> None:
    assert _upgrade_and_diff(f"sqlite:///{tmp_path / 'm.sqlite3'}", tmp_path) == []


def test_postgresql_migrations_match_the_models(tmp_path: Path) -> None:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        require_service("TEST_DATABASE_URL is not set: PostgreSQL migrations not checked")
    assert url is not None
    schema = "migration_check"
    admin = create_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:
        require_service(f"PostgreSQL unreachable: {exc.__class__.__name__}")
    sep = "&" if "?" in url else "?"
    try:
        assert _upgrade_and_diff(f"{url}{sep}options=-csearch_path%3D{schema}", tmp_path) == []
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def test_required_indexes_exist(app: Flask) -> None:
    with db.engine.connect() as conn:
        inspector = inspect(conn)
        leads = {tuple(ix["column_names"]) for ix in inspector.get_indexes("leads")}
        messages = {ix["name"]: ix for ix in inspector.get_indexes("messages")}
    assert ("workspace_id", "opt_in") in leads
    index = messages["ix_messages_conversation_id_created_at_id"]
    assert index["column_names"][0] == "conversation_id"
    if db.engine.dialect.name == "postgresql":
        sorting = index.get("column_sorting", {})
        assert "desc" in sorting.get("created_at", ()) and "desc" in sorting.get("id", ())


@pytest.mark.parametrize(
    "table",
    ["whatsapp_accounts", "leads", "conversations", "messages", "api_tokens", "memberships", "invitations"],
)
def test_tenant_tables_carry_workspace_id(app: Flask, table: str) -> None:
    with db.engine.connect() as conn:
        columns = {c["name"]: c for c in inspect(conn).get_columns(table)}
    assert "workspace_id" in columns and columns["workspace_id"]["nullable"] is False
