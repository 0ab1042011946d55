"""Sending: API → outbox → provider, exactly once, with errors acted on."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Conversation, Message
from crm.leads.models import Lead
from crm.whatsapp.models import Outbox, WhatsAppAccount
from crm.whatsapp.outbox import deliver_outbound, reconcile_outbox
from tests import factories
from tests.fakes.graph_api import GraphEmulator
from tests.whatsapp.conftest import Api, make_cloud_account, post_webhook


def only_message() -> Message:
    message = db.session.scalar(select(Message).where(Message.direction == "out"))
    assert message is not None
    return message


def outbox_of(message: Message) -> Outbox:
    row = db.session.scalar(select(Outbox).where(Outbox.message_id == message.id))
    assert row is not None
    return row


def test_api_send_goes_out_through_the_cloud_api(
    api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    response = api.post("/messages", {"to": "+55 11 98888-7777", "text": "Seu pedido saiu!"})
    assert response.status_code == 202
    body = response.json
    assert body["status"] == "queued" and body["id"] and body["conversation_id"]
    assert len(graph_api.sent) == 1
    sent = graph_api.sent[0]
    assert sent.json["to"] == "5511988887777" and sent.json["text"]["body"] == "Seu pedido saiu!"
    assert sent.json["messaging_product"] == "whatsapp"
    request = graph_api.requests[-1]
    assert request.path == f"/v23.0/{cloud_account.settings['phone_number_id']}/messages"
    assert request.header("Authorization") == "Bearer test-token"
    message = only_message()
    assert message.status == "sent" and message.provider_message_id == sent.wamid
    assert message.account_id == cloud_account.id and message.provider == "cloud" and message.author == "api"


def test_same_idempotency_key_sends_once(
    api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    first = api.post("/messages", {"to": "+5511988887777", "text": "Oi", "idempotency_key": "order-42"})
    second = api.post("/messages", {"to": "+5511988887777", "text": "Oi", "idempotency_key": "order-42"})
    assert first.status_code == second.status_code == 202
    assert first.json["id"] == second.json["id"]
    assert len(graph_api.sent) == 1
    assert db.session.scalar(select(func.count()).select_from(Outbox)) == 1


def test_send_lands_in_the_conversation_the_lead_started(
    api: Api, client: object, owner: factories.Person, graph_api: GraphEmulator
) -> None:
    first = make_cloud_account(owner, graph_api, phone_number_id="111", name="One", priority=0)
    second = make_cloud_account(owner, graph_api, phone_number_id="222", name="Two", priority=1)
    conversation_id = factories.inbound(second.id, phone="+5511977776666")
    response = api.post("/messages", {"to": "+5511977776666", "text": "Resposta"})
    assert response.json["conversation_id"] == conversation_id
    assert graph_api.sent[0].phone_number_id == "222"
    assert first.id != second.id


def test_opted_out_lead_gets_nothing(
    api: Api, cloud_account: WhatsAppAccount, owner: factories.Person, graph_api: GraphEmulator
) -> None:
    db.session.add(
        Lead(workspace_id=owner.workspace_id, phone="+5511966665555", opt_in=False, opted_out_at=utcnow())
    )
    db.session.commit()
    response = api.post("/messages", {"to": "+5511966665555", "text": "Promo"})
    assert response.status_code == 409 and response.json["error"]["code"] == "opted_out"
    assert graph_api.sent == [] and db.session.scalar(select(func.count()).select_from(Message)) == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"to": "abc", "text": "x"}, 422, "invalid_phone"),
        ({"to": "+5511988887777", "text": ""}, 422, "invalid_text"),
        ({"to": "+5511988887777"}, 422, "invalid_text"),
        ({"to": "+5511988887777", "text": "x" * 5000}, 422, "invalid_text"),
        ({"to": "+5511988887777", "text": "x", "account_id": "1"}, 422, "invalid_account"),
        ({"to": "+5511988887777", "text": "x", "idempotency_key": 5}, 422, "invalid_idempotency_key"),
        ({"to": "+5511988887777", "text": "x", "account_id": 999999}, 404, "not_found"),
    ],
)
def test_bad_sends_change_nothing(
    api: Api,
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    body: dict[str, object],
    status: int,
    code: str,
) -> None:
    response = api.post("/messages", body)
    assert (response.status_code, response.json["error"]["code"]) == (status, code)
    assert graph_api.sent == [] and db.session.scalar(select(func.count()).select_from(Message)) == 0


def test_no_number_means_409(api: Api) -> None:
    response = api.post("/messages", {"to": "+5511988887777", "text": "x"})
    assert response.status_code == 409 and response.json["error"]["code"] == "no_account"


def test_throughput_error_retries_later_then_sends(
    api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    graph_api.fail_next(130429)
    api.post("/messages", {"to": "+5511988887777", "text": "x"})
    message = only_message()
    row = outbox_of(message)
    assert message.status == "queued" and row.state == "queued" and row.next_attempt_at > utcnow()
    assert "130429" in (row.last_error or "")
    account = db.session.get(WhatsAppAccount, cloud_account.id)
    assert account is not None and account.paused_until is not None  # the whole number slows down
    row.next_attempt_at = utcnow() - timedelta(seconds=1)
    account.paused_until = None
    db.session.commit()
    assert deliver_outbound(row.id) == "sent"
    db.session.refresh(message)
    assert message.status == "sent" and len(graph_api.sent) == 1


def test_outside_the_24h_window_fails_and_says_to_use_a_template(
    api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    graph_api.fail_next(131047)
    api.post("/messages", {"to": "+5511988887777", "text": "x"})
    message = only_message()
    assert message.status == "failed" and message.error_code == "131047"
    assert "template" in (message.error_title or "")
    assert outbox_of(message).state == "failed"


def test_expired_token_marks_the_number_and_the_fallback_carries(
    api: Api, owner: factories.Person, graph_api: GraphEmulator
) -> None:
    primary = make_cloud_account(owner, graph_api, phone_number_id="111", name="Primary")
    backup = make_cloud_account(owner, graph_api, phone_number_id="222", name="Backup", priority=5)
    primary.fallback_account_id = backup.id
    db.session.commit()
    graph_api.fail_next(190)
    api.post("/messages", {"to": "+5511988887777", "text": "via backup"})
    db.session.refresh(primary)
    assert primary.health == "logged_out"
    message = only_message()
    row = outbox_of(message)
    assert row.state == "queued"
    row.next_attempt_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert deliver_outbound(row.id) == "sent"
    db.session.refresh(message)
    conversation = db.session.get(Conversation, message.conversation_id)
    assert conversation is not None and conversation.account_id == primary.id  # same thread
    assert (
        message.account_id == backup.id and graph_api.sent[-1].phone_number_id == "222"
    )  # carried by backup


def test_policy_block_without_fallback_fails_with_the_reason(
    api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    graph_api.fail_next(368)
    api.post("/messages", {"to": "+5511988887777", "text": "x"})
    db.session.refresh(cloud_account)
    assert cloud_account.health == "blocked" and cloud_account.health_reason
    assert only_message().status == "failed" and only_message().error_code == "368"
    assert api.get("/accounts").json["data"][0]["health"] == "blocked"


def test_worker_killed_mid_delivery_is_recovered_by_the_reconciler(
    api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    graph_api.fail_next(131000)  # keeps the first delivery from finishing in the request
    api.post("/messages", {"to": "+5511988887777", "text": "x"})
    row = outbox_of(only_message())
    # A worker claimed it and died: the row is stuck in "sending" with a lease.
    row.state, row.lease_until = "sending", utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert reconcile_outbox()["expired"] == 1
    db.session.refresh(row)
    assert row.state == "sent" and len(graph_api.sent) == 1


def test_lost_queue_jobs_are_requeued(
    api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    graph_api.fail_next(131000)
    api.post("/messages", {"to": "+5511988887777", "text": "x"})
    row = outbox_of(only_message())
    # Redis flushed: the row is queued and due, but no job will ever come for it.
    row.next_attempt_at = utcnow() - timedelta(minutes=2)
    db.session.commit()
    assert reconcile_outbox()["requeued"] == 1
    db.session.refresh(row)
    assert row.state == "sent" and len(graph_api.sent) == 1


def test_a_claimed_row_is_not_sent_twice(
    api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    api.post("/messages", {"to": "+5511988887777", "text": "x"})
    row = outbox_of(only_message())
    assert deliver_outbound(row.id) == "not_claimed"  # already sent
    assert len(graph_api.sent) == 1


def test_agent_reply_turns_the_ai_off_and_patch_turns_it_on(
    api: Api, sandbox_account: WhatsAppAccount
) -> None:
    conversation_id = factories.inbound(sandbox_account.id)
    assert api.get("/conversations").json["data"][0]["ai_enabled"] is True
    response = api.post(f"/conversations/{conversation_id}/messages", {"text": "Olá! Como posso ajudar?"})
    assert response.status_code == 202 and response.json["conversation_id"] == conversation_id
    messages = api.get(f"/conversations/{conversation_id}/messages").json["data"]
    assert messages[0]["author"] == "agent" and messages[0]["status"] == "delivered"
    assert messages[0]["provider"] == "sandbox" and messages[0]["provider_message_id"].startswith("sandbox.")
    assert api.get("/conversations").json["data"][0]["ai_enabled"] is False
    assert api.patch(f"/conversations/{conversation_id}", {"ai_enabled": True}).json["ai_enabled"] is True
    assert api.patch(f"/conversations/{conversation_id}", {"ai_enabled": "yes"}).status_code == 422


def test_status_webhooks_move_forward_only(
    client: object, api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    api.post("/messages", {"to": "+5511988887777", "text": "x"})
    wamid = graph_api.sent[0].wamid
    for status in ("read", "delivered", "sent", "read"):
        assert (
            post_webhook(api.client, cloud_account, graph_api.status_payload(wamid, status)).status_code
            == 200
        )
    assert only_message().status == "read"
    failed = graph_api.status_payload(wamid, "failed", error_code=131026, error_title="Message undeliverable")
    post_webhook(api.client, cloud_account, failed)
    assert only_message().status == "read"  # failed never replaces a delivered message
