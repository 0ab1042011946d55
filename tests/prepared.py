"""psycopg's prepared statements as PostgreSQL shows them (tests on PostgreSQL only)."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection

PREPARED = "SELECT statement, parameter_types::text, generic_plans, custom_plans FROM pg_prepared_statements"


def as_prepared(statement: str) -> str:
    """A statement's text as the driver gets it (``%(name)s``), with its parameters numbered as
    PostgreSQL shows it prepared: $1, $2, … in order of first use, a name used again keeping its
    number (as psycopg sends it)."""
    numbers: dict[str, int] = {}
    return re.sub(r"%\((\w+)\)s", lambda m: f"${numbers.setdefault(m[1], len(numbers) + 1)}", statement)


def _rows(connection: Connection) -> list[Any]:
    """pg_prepared_statements on this connection, committed: a text statement's transaction would
    otherwise end in a rollback, on which psycopg drops every prepared statement (crm/pg.py)."""
    rows = list(connection.exec_driver_sql(PREPARED))
    connection.commit()
    return rows


def prepared_statements(connection: Connection) -> list[tuple[str, str]]:
    """The statements prepared on this connection, with their parameters' types."""
    return [(row[0], row[1]) for row in _rows(connection)]


def plans_made(connection: Connection) -> dict[str, tuple[int, int]]:
    """Each statement prepared on this connection, with its runs on its generic plan and the plans
    PostgreSQL made for its values."""
    return {row[0]: (row[2], row[3]) for row in _rows(connection)}
