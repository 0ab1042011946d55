"""Messages partitioned by month on PostgreSQL (migration 0017, crm.ops.partitions): partitions
made ahead of time, rows routed to their month, provider ids unique across partitions through
``message_keys``, and existing data carried over by the migration. SQLite keeps a plain table;
the uniqueness tests run on both."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine, func, inspect, select, text

from crm.db import utcnow
from crm.extensions import db
from crm.inbox.keys import keyed
from crm.inbox.models import Message, MessageKey
from crm.ops.partitions import ensure_partitions, list_partitions, month_start, partition_name
from crm.whatsapp.events import InboundMessage
from crm.whatsapp.inbound import IngestSummary, ingest_message
from crm.whatsapp.statuses import apply_status
from tests import factories
from tests.conftest import BACKEND, make_test_config
from tests.services import require_service

postgres_only = pytest.mark.skipif(
    BACKEND != "postgresql", reason="messages are partitioned on PostgreSQL only"
)


@pytest.fixture
def number(owner: factories.Person) -> int:
    return factories.sandbox_account(owner)


def _receive(account_id: int, wamid: str, at: datetime, text_: str = "Oi") -> IngestSummary:
    summary = ingest_message(
        account_id,
        InboundMessage(
            provider_message_id=wamid, type="text", text=text_, timestamp=at, phone="+5511988887777"
        ),
    )
    db.session.expire_all()
    return summary


def _partition_of(message_id: int) -> str:
    return str(
        db.session.scalar(
            text("SELECT tableoid::regclass::text FROM messages WHERE id = :id"), {"id": message_id}
        )
    )


@postgres_only
def test_this_month_and_the_next_three_have_partitions_each_with_the_thread_index(app: Flask) -> None:
    now = datetime.now(UTC)
    with db.engine.connect() as conn:
        names = [p.name for p in list_partitions(conn)]
        months = [partition_name(month_start(now.year, now.month + k)) for k in range(4)]
        assert set(months) <= set(names)
        assert names[0] == "messages_past" and names[-1] == "messages_future"
        for name in [*months, "messages_past", "messages_future"]:
            indexes = {ix["name"]: ix for ix in inspect(conn).get_indexes(name)}
            thread = [
                ix for ix in indexes.values() if ix["column_names"] == ["conversation_id", "created_at", "id"]
            ]
            assert thread, f"{name} has no (conversation_id, created_at DESC, id DESC) index"
            assert thread[0].get("column_sorting", {}) == {"created_at": ("desc",), "id": ("desc",)}


@postgres_only
def test_a_message_lands_in_its_months_partition(number: int) -> None:
    now = utcnow()
    this_month = _receive(number, "wamid.now", now).stored[0]
    next_month_at = month_start(now.year, now.month + 1) + timedelta(days=2)
    next_month = _receive(number, "wamid.next", next_month_at).stored[0]
    ancient = _receive(number, "wamid.1999", datetime(1999, 1, 1, tzinfo=UTC)).stored[0]
    assert _partition_of(this_month) == partition_name(month_start(now.year, now.month))
    assert _partition_of(next_month) == partition_name(month_start(now.year, now.month + 1))
    assert _partition_of(ancient) == "messages_past"
    # Found by id alone too (every partition's primary key index is probed).
    found = db.session.get(Message, next_month)
    assert found is not None and found.provider_message_id == "wamid.next"


def _months() -> list[str]:
    with db.engine.connect() as conn:
        return [p.name for p in list_partitions(conn) if p.start is not None]


@postgres_only
def test_ensure_partitions_carves_the_missing_months_once_in_order(app: Flask) -> None:
    db.session.commit()  # no transaction of the test's holds a lock on messages
    last = _months()[-1]
    year, month = int(last[10:14]), int(last[15:17])
    later = month_start(year, month + 1) + timedelta(days=10)
    created = ensure_partitions(now=later, months_ahead=1)
    assert created == [partition_name(month_start(year, month + k)) for k in (1, 2)]
    assert ensure_partitions(now=later, months_ahead=1) == []
    with db.engine.connect() as conn:
        names = [p.name for p in list_partitions(conn)]
    assert names[-3:] == [*created, "messages_future"]


@postgres_only
def test_rows_waiting_in_the_catch_all_partitions_move_into_their_months(number: int) -> None:
    last = _months()[-1]
    year, month = int(last[10:14]), int(last[15:17])
    ahead = month_start(year, month + 2) + timedelta(days=5, hours=3)  # a clock far ahead
    ahead_id = _receive(number, "wamid.ahead", ahead).stored[0]
    first = _months()[0]
    before = month_start(int(first[10:14]), int(first[15:17]) - 2) + timedelta(days=1)  # old history
    before_id = _receive(number, "wamid.before", before).stored[0]
    assert (_partition_of(ahead_id), _partition_of(before_id)) == ("messages_future", "messages_past")
    db.session.commit()
    now = utcnow()
    back = (now.year - before.year) * 12 + now.month - before.month
    created = ensure_partitions(now=ahead, months_ahead=0)
    created += ensure_partitions(months_ahead=0, months_back=back)
    assert partition_name(month_start(ahead.year, ahead.month)) in created
    assert partition_name(month_start(before.year, before.month)) in created
    assert _partition_of(ahead_id) == partition_name(month_start(ahead.year, ahead.month))
    assert _partition_of(before_id) == partition_name(month_start(before.year, before.month))
    assert db.session.scalar(text("SELECT count(*) FROM messages_future")) == 0
    assert db.session.scalar(text("SELECT count(*) FROM messages_past")) == 0
    # The moved rows keep working: statuses find them through their keys, a re-delivery is stopped.
    assert db.session.scalar(select(Message.id).where(*keyed(number, "wamid.ahead"))) == ahead_id
    assert _receive(number, "wamid.ahead", ahead).duplicates == 1
    with db.engine.connect() as conn:
        assert any(
            ix["column_names"][0] == "conversation_id"
            for ix in inspect(conn).get_indexes(partition_name(month_start(ahead.year, ahead.month)))
        )


@postgres_only
def test_a_threads_newest_page_reads_partitions_newest_first_and_stops(owner: factories.Person) -> None:
    number = factories.sandbox_account(owner)
    conversation_id = factories.inbound(number)
    now = utcnow()
    for k in range(1, 4):  # older months hold messages too
        factories.stored_message(conversation_id, f"old {k}", created_at=month_start(now.year, now.month - k))
    plan = "\n".join(
        db.session.scalars(
            text(
                "EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM messages WHERE conversation_id = :c "
                "ORDER BY created_at DESC, id DESC LIMIT 1"
            ),
            {"c": conversation_id},
        )
    )
    assert "Merge Append" not in plan, plan  # an ordered Append: no DEFAULT partition in the way
    read = [ln for ln in plan.splitlines() if "Scan" in ln and "never executed" not in ln]
    this_month = partition_name(month_start(now.year, now.month))
    assert not any(name in ln for ln in read for name in _months() if name < this_month), plan


def test_a_provider_id_is_stored_once_even_when_its_deliveries_fall_in_different_months(number: int) -> None:
    now = utcnow()
    first = _receive(number, "wamid.twice", now)
    # The same id again with another date (a provider's clock, another partition): still one message.
    again = _receive(
        number, "wamid.twice", month_start(now.year, now.month + 1) + timedelta(days=1), "changed"
    )
    assert len(first.stored) == 1 and again.stored == [] and again.duplicates == 1
    assert db.session.scalars(select(Message.text)).all() == ["Oi"]
    key = db.session.get(MessageKey, (number, "wamid.twice"))
    assert key is not None and key.message_id == first.stored[0]
    # The same id on another number is another message.
    other = factories.sandbox_account(factories.person(workspace="Acme2", email="o@acme2.example"), "Other")
    assert len(_receive(other, "wamid.twice", now).stored) == 1


def test_a_status_reaches_a_message_in_another_month_through_its_key(
    owner: factories.Person, number: int
) -> None:
    conversation_id = factories.inbound(number)
    at = month_start(utcnow().year, utcnow().month + 1) + timedelta(hours=3)
    message_id = factories.stored_message(
        conversation_id, "Olá", direction="out", status="sent", provider_message_id="wamid.out", created_at=at
    )
    assert apply_status(owner.workspace_id, number, "wamid.out", "delivered", utcnow()) is True
    message = db.session.get(Message, message_id)
    assert message is not None and message.status == "delivered"
    if BACKEND == "postgresql":  # one partition read, chosen from the key
        plan = "\n".join(
            db.session.scalars(
                text(
                    "EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM messages WHERE id = (SELECT message_id "
                    "FROM message_keys WHERE account_id = :a AND provider_message_id = :p) AND created_at = "
                    "(SELECT created_at FROM message_keys WHERE account_id = :a AND provider_message_id = :p)"
                ),
                {"a": number, "p": "wamid.out"},
            )
        )
        assert "(never executed)" in plan or "Subplans Removed" in plan, plan
        scanned = [ln for ln in plan.splitlines() if "Scan" in ln and "messages_" in ln and "never" not in ln]
        assert len(scanned) == 1 and partition_name(month_start(at.year, at.month)) in scanned[0], plan


def test_purging_a_lead_forgets_its_keys_and_outbox_rows(owner: factories.Person, number: int) -> None:
    from crm.leads.trash import purge_lead
    from crm.whatsapp.models import Outbox

    summary = _receive(number, "wamid.gone", utcnow())
    message = db.session.get(Message, summary.stored[0])
    assert message is not None
    lead_id = db.session.scalar(
        text("SELECT lead_id FROM conversations WHERE id = :c"), {"c": message.conversation_id}
    )
    db.session.add(Outbox(workspace_id=owner.workspace_id, message_id=message.id, state="sent"))
    db.session.commit()
    purge_lead(owner.workspace_id, int(lead_id))
    assert db.session.scalar(select(func.count()).select_from(MessageKey)) == 0
    assert db.session.scalar(select(func.count()).select_from(Outbox)) == 0
    # The customer writing again (even a late re-delivery) is a new lead and a new message.
    assert len(_receive(number, "wamid.gone", utcnow()).stored) == 1


# --- the migration carries existing rows over ----------------------------------------------------

SEED = """
INSERT INTO workspaces (id, name, country, timezone, locale, created_at, auto_assign, trash_days)
    VALUES (1, 'W', 'BR', 'America/Sao_Paulo', 'pt_BR', :now, false, 30);
INSERT INTO whatsapp_accounts (id, workspace_id, provider, name, status, health, settings, created_at)
    VALUES (1, 1, 'sandbox', 'N', 'connected', 'ok', '{}', :now);
INSERT INTO leads (id, workspace_id, name, notes, opt_in, created_at, updated_at)
    VALUES (1, 1, 'L', '', false, :now, :now);
INSERT INTO conversations
    (id, workspace_id, lead_id, account_id, status, unread_count, ai_enabled, created_at)
    VALUES (1, 1, 1, 1, 'open', 0, true, :now);
INSERT INTO messages (id, workspace_id, conversation_id, account_id, direction, type, text, status, provider,
                      provider_message_id, author, created_at)
    VALUES (1, 1, 1, 1, 'in', 'text', 'old', 'received', 'sandbox', 'wamid.old', 'lead', :old),
           (2, 1, 1, 1, 'out', 'text', 'queued', 'queued', 'sandbox', NULL, 'agent', :recent),
           (3, 1, 1, 1, 'out', 'text', 'sent', 'sent', 'sandbox', 'wamid.sent', 'agent', :recent),
           (4, 1, 1, 1, 'in', 'text', 'ancient', 'received', 'sandbox', 'wamid.ancient', 'lead', :ancient);
INSERT INTO outbox (workspace_id, message_id, state, attempts, next_attempt_at, created_at, updated_at)
    VALUES (1, 2, 'queued', 0, :now, :now, :now);
"""


@pytest.fixture
def empty_database(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """A database URL of its own (a schema on PostgreSQL, a file on SQLite) and an engine on it."""
    if BACKEND != "postgresql":
        url = f"sqlite:///{tmp_path / 'migrate.sqlite3'}"
        engine = create_engine(url)
        yield url, engine
        engine.dispose()
        return
    base = os.environ.get("TEST_DATABASE_URL") or require_service("TEST_DATABASE_URL is not set")
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS partition_migration CASCADE"))
        conn.execute(text("CREATE SCHEMA partition_migration"))
    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}options=-csearch_path%3Dpartition_migration"
    engine = create_engine(url)
    yield url, engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS partition_migration CASCADE"))
    admin.dispose()


def test_the_migration_moves_existing_messages_keys_and_all(
    empty_database: tuple[str, Engine], tmp_path: Path
) -> None:
    from flask_migrate import downgrade, upgrade

    from crm import create_app

    url, engine = empty_database
    app = create_app(make_test_config(url, tmp_path))
    old = utcnow() - timedelta(days=80)
    ancient = datetime(2019, 3, 10, 9, tzinfo=UTC)
    recent = utcnow() - timedelta(minutes=5)
    with app.app_context():
        upgrade(revision="0016")
        with engine.begin() as conn:
            for statement in SEED.split(";"):
                if statement.strip():
                    conn.execute(
                        text(statement), {"old": old, "recent": recent, "now": recent, "ancient": ancient}
                    )
            if BACKEND == "postgresql":
                conn.execute(text("SELECT setval('messages_id_seq', 4)"))
        upgrade()
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, text, provider_message_id FROM messages ORDER BY id")).all()
            assert [tuple(r) for r in rows] == [
                (1, "old", "wamid.old"),
                (2, "queued", None),
                (3, "sent", "wamid.sent"),
                (4, "ancient", "wamid.ancient"),
            ]
            keys = conn.execute(
                text("SELECT provider_message_id, message_id FROM message_keys ORDER BY 2")
            ).all()
            assert [tuple(k) for k in keys] == [("wamid.old", 1), ("wamid.sent", 3), ("wamid.ancient", 4)]
            assert conn.execute(text("SELECT message_id FROM outbox")).scalar() == 2
            if BACKEND == "postgresql":
                names = [p.name for p in list_partitions(conn)]
                now = utcnow()  # months from the oldest message's, at most 24 back
                assert names[:2] == ["messages_past", partition_name(month_start(now.year, now.month - 24))]
                assert names[-1] == "messages_future"
                where = dict(conn.execute(text("SELECT id, tableoid::regclass::text FROM messages")).all())
                assert where[1] == partition_name(month_start(old.year, old.month))
                assert where[4] == "messages_past"  # older than the 24 months the migration makes
                # The sequence carries on past the moved rows.
                assert conn.execute(text("SELECT nextval('messages_id_seq')")).scalar() == 5
        downgrade(revision="0016")
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, provider_message_id FROM messages ORDER BY id")).all()
            assert [tuple(r) for r in rows] == [
                (1, "wamid.old"),
                (2, None),
                (3, "wamid.sent"),
                (4, "wamid.ancient"),
            ]
            uniques = inspect(conn).get_unique_constraints("messages")
            assert ["account_id", "provider_message_id"] in [u["column_names"] for u in uniques]
        db.engine.dispose()


def test_the_inbox_previews_each_conversations_newest_message_across_months(owner: factories.Person) -> None:
    from crm.inbox.listing import last_messages

    number = factories.sandbox_account(owner)
    first = factories.inbound(number, phone="+5511911110001", text="first")
    second = factories.inbound(number, phone="+5511911110002", text="second")
    later = month_start(utcnow().year, utcnow().month + 1) + timedelta(days=3)
    factories.stored_message(first, "next month", created_at=later)
    tie_low = factories.stored_message(second, "tie a", created_at=later)
    tie_high = factories.stored_message(second, "tie b", created_at=later)
    assert tie_high > tie_low
    previews = last_messages(owner.workspace_id, [first, second])
    assert previews[first].text == "next month"
    assert previews[second].id == tie_high  # equal times: the higher id is the newer
    assert last_messages(owner.workspace_id, []) == {}


def test_the_partitions_command_lists_them(runner: Any) -> None:
    result = runner.invoke(args=["crm", "partitions", "--months-ahead", "1"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    if BACKEND == "postgresql":
        assert out["created"] == [] and out["partitions"][0] == "messages_past"
        assert out["partitions"][-1] == "messages_future"
    else:
        assert "plain table" in out["partitions"]
    bad = runner.invoke(args=["crm", "partitions", "--months-back", "-1"])
    assert bad.exit_code != 0 and "months-back" in bad.output
