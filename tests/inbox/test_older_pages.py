"""A thread's older pages: the same rows as the keyset statement on both databases; on PostgreSQL
through ``messages_before`` (migration 0025), whose plan reads the index in order and leaves out
the newer monthly partitions as it starts."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from crm.db import utcnow
from crm.errors import NotFound
from crm.extensions import db
from crm.inbox import services
from crm.inbox.models import Message
from tests import factories
from tests.conftest import BACKEND
from tests.inbox.test_query_counts import counted

postgresql_only = pytest.mark.skipif(BACKEND != "postgresql", reason="the function is PostgreSQL's")


@pytest.fixture
def long_history(owner: factories.Person) -> int:
    """A conversation of 130 messages over four months, in runs of 7 with the same time."""
    conversation_id = factories.conversation(owner)
    now = utcnow()
    for n in range(130):
        factories.stored_message(
            conversation_id, f"m{n}", created_at=now - timedelta(days=n // 35 * 31, minutes=n // 7)
        )
    return conversation_id


def newest_first(conversation_id: int) -> list[int]:
    rows = db.session.scalars(
        select(Message.id)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.created_at.desc(), Message.id.desc())
    )
    return list(rows)


@pytest.mark.parametrize("limit", [1, 7, 50, 100])
def test_older_pages_hold_every_message_once_in_order(
    owner: factories.Person, long_history: int, limit: int
) -> None:
    read: list[int] = []
    page = services.thread_page(owner.workspace_id, long_history, None, limit)
    read += [message.id for message in page.items]
    while page.next_cursor:
        page = services.thread_page(owner.workspace_id, long_history, page.next_cursor, limit)
        assert len(page.items) <= limit
        read += [message.id for message in page.items]
    assert read == newest_first(long_history)


def test_older_pages_are_the_workspace_s_only(owner: factories.Person, long_history: int) -> None:
    other = factories.person("Other", "other@example.com")
    theirs = factories.conversation(other)
    mine = services.thread_page(owner.workspace_id, long_history, None, 10)
    assert mine.next_cursor is not None
    with pytest.raises(NotFound):
        services.thread_page(owner.workspace_id, theirs, mine.next_cursor, 10)
    if BACKEND == "postgresql":  # the function's own condition, past the check of the conversation
        assert services._messages_before(other.workspace_id, long_history, 10, mine.next_cursor).items == []


@postgresql_only
def test_older_pages_read_in_any_server_time_zone_give_utc_times(
    owner: factories.Person, long_history: int
) -> None:
    cursor = services.thread_page(owner.workspace_id, long_history, None, 10).next_cursor
    assert cursor is not None
    db.session.expunge_all()
    db.session.connection().exec_driver_sql("SET TIME ZONE 'America/Sao_Paulo'")
    page = services.thread_page(owner.workspace_id, long_history, cursor, 10)
    assert page.items and all(message.created_at.utcoffset() == timedelta(0) for message in page.items)
    assert page.next_cursor is not None and "+00:00" in cursor_text(page.next_cursor)


def cursor_text(cursor: str) -> str:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()


@postgresql_only
def test_a_cursor_id_beyond_an_integer_reads_the_messages_before_its_time(
    owner: factories.Person, long_history: int
) -> None:
    """Any id a cursor may hold (below 2**63) is compared, not refused: the page holds what is
    older than the cursor's time, and the messages of that very time (ids below it)."""
    newest = db.session.scalars(select(Message).where(Message.conversation_id == long_history)).all()
    moment = sorted(message.created_at for message in newest)[-40]
    cursor = base64.urlsafe_b64encode(json.dumps([moment.isoformat(), 2**62]).encode()).decode()
    page = services.thread_page(owner.workspace_id, long_history, cursor.rstrip("="), 100)
    assert [message.id for message in page.items] == [
        id_ for id_ in newest_first(long_history) if db.session.get(Message, id_).created_at <= moment
    ]


@postgresql_only
def test_an_older_page_is_read_through_the_function(owner: factories.Person, long_history: int) -> None:
    cursor = services.thread_page(owner.workspace_id, long_history, None).next_cursor
    assert cursor is not None
    db.session.expunge_all()
    with counted() as statements:
        page = services.thread_page(owner.workspace_id, long_history, cursor)
    assert any("messages_before(" in statement for statement in statements), statements
    assert all(isinstance(message, Message) and message.text for message in page.items)


@postgresql_only
def test_the_function_reads_the_index_in_order_and_leaves_out_newer_months(
    owner: factories.Person, long_history: int
) -> None:
    """PostgreSQL's own account of the plan it ran inside the function (auto_explain, as a notice)."""
    cursor = services.thread_page(owner.workspace_id, long_history, None, 20).next_cursor
    assert cursor is not None  # 20 messages in: the months after this one are behind it
    notices: list[str] = []
    with db.engine.connect() as connection:
        if not connection.exec_driver_sql(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).scalar():
            pytest.skip("LOAD 'auto_explain' needs a superuser")
        raw: Any = connection.connection.driver_connection
        raw.add_notice_handler(lambda diagnostic: notices.append(diagnostic.message_primary or ""))
        for setting in (
            "LOAD 'auto_explain'",
            "SET auto_explain.log_min_duration = 0",
            "SET auto_explain.log_nested_statements = on",
            "SET auto_explain.log_level = notice",
        ):
            connection.exec_driver_sql(setting)
        for _ in range(3):  # the same plan every time: made once, generic
            created_at, message_id = services.cursor_values(cursor, services.THREAD_KEYS)
            values = {
                "workspace_id": owner.workspace_id,
                "conversation_id": long_history,
                "created_at": created_at,
                "id": message_id,
                "limit": 51,
            }
            rows = connection.execute(services._before_statement(), values).all()
            assert [row.id for row in rows] == newest_first(long_history)[20:71]
        connection.invalidate()  # not back to the pool with auto_explain loaded
    inner = [notice.split("\n", 1)[1] for notice in notices if "SELECT * FROM messages m" in notice]
    assert len(inner) == 3, notices
    plan = inner[0]
    assert "Sort" not in plan and "Index Scan using" in plan, plan
    assert "created_at <= $3" in plan, plan  # generic: the values are parameters, not constants
    assert "Subplans Removed" in plan, plan  # the months after the cursor's, left out as it starts
