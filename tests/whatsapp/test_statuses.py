"""Statuses: monotonic whatever the order, failures kept, unknown ids parked then applied."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Message
from crm.whatsapp.models import ParkedStatus, WhatsAppAccount
from crm.whatsapp.statuses import apply_parked, apply_status
from tests import factories
from tests.conftest import LiveServer
from tests.fakes.graph_api import GraphEmulator
from tests.whatsapp.conftest import Api, post_webhook


def sent_message(api: Api, graph_api: GraphEmulator) -> tuple[Message, str]:
    api.post("/messages", {"to": "+5511988887777", "text": "x"})
    message = db.session.scalar(select(Message).where(Message.direction == "out"))
    assert message is not None
    return message, graph_api.sent[-1].wamid


@pytest.mark.parametrize(
    ("order", "final"),
    [
        (["sent", "delivered", "read"], "read"),
        (["read", "delivered", "sent"], "read"),
        (["delivered", "read", "delivered", "sent"], "read"),
        (["sent", "played", "read"], "played"),
        (["delivered", "delivered"], "delivered"),
    ],
)
def test_order_does_not_matter(
    api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator, order: list[str], final: str
) -> None:
    message, wamid = sent_message(api, graph_api)
    for status in order:
        assert (
            post_webhook(api.client, cloud_account, graph_api.status_payload(wamid, status)).status_code
            == 200
        )
    db.session.refresh(message)
    assert message.status == final


def test_failed_keeps_code_and_title_and_stays_failed(
    api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    message, wamid = sent_message(api, graph_api)
    payload = graph_api.status_payload(
        wamid, "failed", error_code=131026, error_title="Message undeliverable"
    )
    post_webhook(api.client, cloud_account, payload)
    post_webhook(api.client, cloud_account, graph_api.status_payload(wamid, "delivered"))
    db.session.refresh(message)
    assert (message.status, message.error_code, message.error_title) == (
        "failed",
        "131026",
        "Message undeliverable",
    )


def test_a_status_before_its_message_is_parked_then_applied(
    owner: factories.Person, sandbox_account: WhatsAppAccount
) -> None:
    conversation_id = factories.inbound(sandbox_account.id)
    now = utcnow()
    assert apply_status(owner.workspace_id, sandbox_account.id, "early-id", "read", now) is False
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(ParkedStatus)) == 1
    message_id = factories.stored_message(
        conversation_id, "x", direction="out", status="sent", provider_message_id="early-id"
    )
    message = db.session.get(Message, message_id)
    assert message is not None
    apply_parked(owner.workspace_id, sandbox_account.id, "early-id")
    db.session.commit()
    db.session.refresh(message)
    assert message.status == "read"
    assert db.session.scalar(select(func.count()).select_from(ParkedStatus)) == 0


def test_statuses_fired_by_the_emulator_at_a_live_server(
    api: Api, live_server_url: str, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    """Meta's side for real: signed POSTs over HTTP, out of order, each delivered twice."""
    from crm.whatsapp.accounts import webhook_path

    message, wamid = sent_message(api, graph_api)
    url = live_server_url + (webhook_path(cloud_account) or "")
    responses = graph_api.post_statuses(url, wamid, ["read", "sent", "delivered"], duplicate=True)
    assert [r.status_code for r in responses] == [200] * 6
    db.session.refresh(message)
    assert message.status == "read"


@pytest.fixture
def live_server_url(_live_server: LiveServer, app: object) -> str:
    return _live_server.url
