"""The inbox's pages cost a fixed number of SQL statements, however many rows they show (no N+1)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import Select, event
from sqlalchemy.sql.visitors import iterate

from crm.extensions import db
from crm.inbox import listing, notes
from crm.pg import built_select
from tests import factories


@contextmanager
def listening(record: Callable[..., None]) -> Iterator[None]:
    """``record`` called with each statement run meanwhile, as SQLAlchemy's
    ``before_cursor_execute`` event gives it (connection, cursor, text, parameters, context, many)."""
    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


@contextmanager
def counted() -> Iterator[list[str]]:
    statements: list[str] = []
    with listening(lambda _conn, _cursor, statement, *_args: statements.append(statement)):
        yield statements


def _statements(client: FlaskClient, path: str) -> int:
    with counted() as statements:
        assert client.get(path, headers={"HX-Request": "true"}).status_code == 200
    return len(statements)


def test_the_list_costs_the_same_for_5_or_40_conversations(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    account_id = factories.sandbox_account(owner)
    for n in range(5):
        factories.inbound(account_id, phone=f"+55119000000{n:02d}", name=f"Cliente {n}")
    few = _statements(logged_in, "/")
    for n in range(5, 40):
        factories.inbound(account_id, phone=f"+55119000000{n:02d}", name=f"Cliente {n}")
    assert _statements(logged_in, "/") == few <= 4


def test_a_thread_costs_the_same_for_3_or_60_messages(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    conversation_id = factories.inbound(factories.sandbox_account(owner))
    for n in range(2):
        factories.stored_message(conversation_id, f"m{n}")
    _statements(logged_in, f"/conversations/{conversation_id}")  # marks it read
    few = _statements(logged_in, f"/conversations/{conversation_id}")
    for n in range(57):
        factories.stored_message(conversation_id, f"m{n}", direction="out")
    _statements(logged_in, f"/conversations/{conversation_id}")
    # The session, the conversation (customer, tags, number, whether it has notes), its messages.
    assert _statements(logged_in, f"/conversations/{conversation_id}") == few <= 3
    notes.add_note(owner.workspace_id, conversation_id, owner.user_id, "Cliente VIP")
    assert _statements(logged_in, f"/conversations/{conversation_id}") == few + 1  # and its notes


def test_the_list_previews_are_one_statement_text_for_any_page_length(owner: factories.Person) -> None:
    """On PostgreSQL the previews' statement text doesn't change with how many conversations the
    page has (an IN list of each length would be a statement of its own, planned over every
    partition of the messages until psycopg prepares it)."""
    account_id = factories.sandbox_account(owner)
    ids = [factories.inbound(account_id, phone=f"+55119000001{n:02d}", text=f"oi {n}") for n in range(3)]
    with counted() as statements:
        one = listing.last_messages(owner.workspace_id, ids[:1])
        three = listing.last_messages(owner.workspace_id, ids)
    assert {n: row.text for n, row in three.items()} == {ids[n]: f"oi {n}" for n in range(3)}
    assert list(one) == ids[:1]
    assert len(statements) == 2
    if db.engine.dialect.name == "postgresql":
        assert statements[0] == statements[1]


def test_the_list_previews_show_only_the_workspaces_messages(owner: factories.Person) -> None:
    mine = factories.inbound(factories.sandbox_account(owner), phone="+5511900000201", text="meu")
    other = factories.person("Outra loja", "dona@outra.example", role="owner")
    theirs = factories.inbound(factories.sandbox_account(other), phone="+5511900000202", text="deles")
    previews = listing.last_messages(owner.workspace_id, [mine, theirs])
    assert {n: row.text for n, row in previews.items()} == {mine: "meu"}
    assert list(listing.last_messages(other.workspace_id, [mine, theirs])) == [theirs]


def test_lists_threads_and_older_pages_never_use_offset(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    """Every page is found by its keyset cursor: a page deep in a long history costs what the first does."""
    account_id = factories.sandbox_account(owner)
    conversation_id = factories.inbound(account_id)
    for n in range(120):
        factories.stored_message(conversation_id, f"m{n}")
    for n in range(60):
        factories.inbound(account_id, phone=f"+55119100000{n:02d}", name=f"Cliente {n}")
    hx = {"HX-Request": "true"}
    selects: list[str] = []
    offsets: list[str] = []

    def record(
        _conn: object, _cursor: object, statement: str, _params: object, context: Any, *_: object
    ) -> None:
        if not built_select(context):
            return
        selects.append(statement)
        # SQLite's dialect writes "OFFSET 0" after every LIMIT: what counts is whether any SELECT
        # in the statement, subqueries included, was given an offset.
        if any(
            isinstance(e, Select) and e._offset_clause is not None
            for e in iterate(context.compiled.statement)
        ):
            offsets.append(statement)

    with listening(record):
        first_page = logged_in.get("/", headers=hx).get_data(as_text=True)
        cursor = re.search(r"[?&]cursor=([^\"&]+)", first_page)
        assert cursor, "no next page of the list"
        assert logged_in.get(f"/?cursor={cursor.group(1)}", headers=hx).status_code == 200
        thread = logged_in.get(f"/conversations/{conversation_id}", headers=hx).get_data(as_text=True)
        older = re.search(r'hx-get="(/conversations/\d+/older\?[^"]+)"', thread)
        assert older, "no older page"
        assert logged_in.get(older.group(1).replace("&amp;", "&"), headers=hx).status_code == 200
    assert len(selects) >= 6 and offsets == []
