"""psycopg's prepared statements as PostgreSQL shows them (tests on PostgreSQL only)."""

from __future__ import annotations

import itertools
import re

from sqlalchemy import Connection

PREPARED = "SELECT statement, parameter_types::text, generic_plans, custom_plans FROM pg_prepared_statements"


def as_prepared(statement: str) -> str:
    """A statement's text as the driver gets it (``%(name)s``), with its parameters numbered as
    PostgreSQL shows it prepared ($1, $2, …)."""
    numbers = itertools.count(1)
    return re.sub(r"%\(\w+\)s", lambda _m: f"${next(numbers)}", statement)


def prepared_statements(connection: Connection) -> list[tuple[str, str]]:
    """The statements prepared on this connection, with their parameters' types."""
    return [(row[0], row[1]) for row in connection.exec_driver_sql(PREPARED)]


def plans_made(connection: Connection) -> dict[str, tuple[int, int]]:
    """Each statement prepared on this connection, with its runs on its generic plan and the plans
    PostgreSQL made for its values. Committed: a text statement's transaction would otherwise end
    in a rollback, on which psycopg drops them all (crm/pg.py)."""
    plans = {row[0]: (row[2], row[3]) for row in connection.exec_driver_sql(PREPARED)}
    connection.commit()
    return plans
