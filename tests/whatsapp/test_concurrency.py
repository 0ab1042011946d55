"""Concurrent duplicate deliveries store one row and publish one event."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Conversation, Message
from crm.leads.models import Lead
from crm.realtime.broker import subscribe_local
from crm.whatsapp.events import InboundMessage, ParsedWebhook
from crm.whatsapp.inbound import ingest
from crm.whatsapp.models import WhatsAppAccount


def _run_in_threads(app: Flask, n: int, work: Any) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def target() -> None:
        with app.app_context():
            try:
                barrier.wait(timeout=10)
                work()
            except BaseException as exc:
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=target) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


def test_the_same_message_delivered_eight_times_at_once(app: Flask, sandbox_account: WhatsAppAccount) -> None:
    events: list[dict[str, Any]] = []
    unsubscribe = subscribe_local(lambda ws, event: events.append(event))
    wamid = f"wamid.{uuid.uuid4().hex}"
    parsed = ParsedWebhook(
        messages=[
            InboundMessage(
                provider_message_id=wamid,
                type="text",
                text="oi",
                timestamp=utcnow(),
                phone="+5511955554444",
                name="Ana",
            )
        ]
    )
    account_id = sandbox_account.id
    try:
        errors = _run_in_threads(app, 8, lambda: ingest(account_id, parsed, attempts=10))
    finally:
        unsubscribe()
    assert errors == []
    assert db.session.scalar(select(func.count()).select_from(Message)) == 1
    assert db.session.scalar(select(func.count()).select_from(Lead)) == 1
    assert db.session.scalar(select(func.count()).select_from(Conversation)) == 1
    assert [e["type"] for e in events] == ["message.created"]
    conversation = db.session.scalar(select(Conversation))
    assert conversation is not None and conversation.unread_count == 1


def test_first_messages_of_one_person_at_once_share_one_lead_and_conversation(
    app: Flask, sandbox_account: WhatsAppAccount
) -> None:
    account_id = sandbox_account.id

    def one() -> None:
        msg = InboundMessage(
            provider_message_id=f"wamid.{uuid.uuid4().hex}",
            type="text",
            text="oi",
            timestamp=utcnow(),
            phone="+5511955553333",
        )
        ingest(account_id, ParsedWebhook(messages=[msg]), attempts=10)

    assert _run_in_threads(app, 6, one) == []
    assert db.session.scalar(select(func.count()).select_from(Message)) == 6
    assert db.session.scalar(select(func.count()).select_from(Lead)) == 1
    conversation = db.session.scalar(select(Conversation))
    assert conversation is not None and conversation.unread_count == 6
