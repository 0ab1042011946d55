"""Killing the queue loses nothing: the outbox in the database is the truth."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Message
from crm.whatsapp.models import Outbox, WhatsAppAccount
from crm.whatsapp.outbox import reconcile_outbox
from crm.worker import huey
from tests.fakes.graph_api import GraphEmulator
from tests.whatsapp.conftest import Api


@pytest.mark.parametrize("real_queue", ["sqlite", "redis"], indirect=True)
def test_flushed_queue_is_refilled_by_the_reconciler(
    real_queue: str, api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    response = api.post("/messages", {"to": "+5511988887777", "text": "não me perca"})
    assert response.status_code == 202
    assert huey.pending_count() == 1  # enqueued after the commit, not sent inside the request
    assert graph_api.sent == []
    huey.flush()  # Redis restarted without persistence (or the queue file was lost)
    assert huey.pending_count() == 0
    row = db.session.scalar(select(Outbox))
    assert row is not None and row.state == "queued"
    row.next_attempt_at = utcnow() - timedelta(minutes=2)  # a minute and more without a job
    db.session.commit()
    result = reconcile_outbox()
    assert (result["expired"], result["requeued"]) == (0, 1)
    assert huey.pending_count() == 1
    task = huey.dequeue()
    assert task is not None
    huey.execute(task)
    message = db.session.scalar(select(Message).where(Message.direction == "out"))
    assert message is not None and message.status == "sent" and len(graph_api.sent) == 1
    # The reconciler finds nothing more to do, and nothing is sent twice.
    again = reconcile_outbox()
    assert (again["expired"], again["requeued"]) == (0, 0) and len(graph_api.sent) == 1
