"""What review found could go wrong: each case stays correct and never becomes a 500."""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Message
from crm.leads.models import Lead
from crm.ops.metrics import counters
from crm.whatsapp.accounts import create_account
from crm.whatsapp.models import Outbox, ParkedStatus, WhatsAppAccount
from crm.whatsapp.outbox import MAX_ATTEMPTS, deliver_outbound, reconcile_outbox
from tests import factories
from tests.fakes.graph_api import GraphEmulator
from tests.whatsapp.conftest import Api, post_webhook


def outbound() -> tuple[Message, Outbox]:
    message = db.session.scalar(select(Message).where(Message.direction == "out"))
    assert message is not None
    row = db.session.scalar(select(Outbox).where(Outbox.message_id == message.id))
    assert row is not None
    return message, row


def test_a_message_without_sender_does_not_sink_the_delivery(
    client: FlaskClient, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    payload = graph_api.message_payload(text="valid one", wamid="wamid.ok")
    value = payload["entry"][0]["changes"][0]["value"]
    value["messages"].append(
        {"id": "wamid.nobody", "timestamp": "1700000000", "type": "text", "text": {"body": "who am I"}}
    )
    value["contacts"] = []
    assert post_webhook(client, cloud_account, payload).status_code == 200
    assert set(db.session.scalars(select(Message.provider_message_id))) == {"wamid.ok"}


def test_nul_characters_and_oversized_ids_are_stored_safely(
    client: FlaskClient, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    payload = graph_api.message_payload(from_phone="5" * 40, text="a\x00b", name="N\x00ame")
    assert post_webhook(client, cloud_account, payload).status_code == 200
    message = db.session.scalar(select(Message))
    lead = db.session.scalar(select(Lead))
    assert message is not None and message.text == "ab"
    assert lead is not None and lead.phone is None and lead.bsuid == "+" + "5" * 40


def test_duplicate_status_deliveries_park_once_and_the_reconciler_applies_them(
    client: FlaskClient, api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    payload = graph_api.status_payload("wamid.later", "read")
    for _ in range(3):
        assert post_webhook(client, cloud_account, payload).status_code == 200
    assert db.session.scalar(select(func.count()).select_from(ParkedStatus)) == 1
    api.post("/messages", {"to": "+5511988887777", "text": "x"})
    message, _row = outbound()
    # As if the webhook had parked its status while our commit of the id was still open.
    db.session.add(
        ParkedStatus(
            workspace_id=message.workspace_id,
            account_id=cloud_account.id,
            provider_message_id=message.provider_message_id or "",
            status="delivered",
            occurred_at=utcnow(),
        )
    )
    db.session.commit()
    assert reconcile_outbox()["parked_applied"] == 1
    db.session.refresh(message)
    assert message.status == "delivered"


def test_a_freshly_claimed_row_is_left_alone_by_the_reconciler(
    api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    graph_api.fail_next(131000)
    api.post("/messages", {"to": "+5511988887777", "text": "x"})
    _message, row = outbound()
    row.state, row.lease_until = "sending", utcnow() + timedelta(minutes=1)
    db.session.commit()
    assert reconcile_outbox()["expired"] == 0
    db.session.refresh(row)
    assert row.state == "sending"


def test_an_unexpected_exception_in_a_send_retries_instead_of_sticking(
    api: Api, cloud_account: WhatsAppAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm.whatsapp.providers import cloud

    def boom(self: Any, request: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(cloud.CloudClient, "send", boom)
    api.post("/messages", {"to": "+5511988887777", "text": "x"})
    message, row = outbound()
    assert row.state == "queued" and "RuntimeError" in (row.last_error or "")
    assert row.attempts == 1 and message.status == "queued"


def test_waiting_for_pacing_uses_no_attempts(api: Api, owner: factories.Person) -> None:
    create_account(owner.workspace_id, provider="sandbox", name="Slow", max_per_minute=1)
    api.post("/messages", {"to": "+5511988880001", "text": "first"})
    api.post("/messages", {"to": "+5511988880002", "text": "second"})
    rows = db.session.scalars(select(Outbox).order_by(Outbox.id)).all()
    assert [r.state for r in rows] == ["sent", "queued"]
    assert [r.attempts for r in rows] == [1, 0]
    rows[1].next_attempt_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert deliver_outbound(rows[1].id) == "paced"
    db.session.refresh(rows[1])
    assert rows[1].attempts == 0


def test_rows_that_keep_failing_are_given_up(
    api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    graph_api.fail_next(131000)
    api.post("/messages", {"to": "+5511988887777", "text": "x"})
    message, row = outbound()
    row.attempts = MAX_ATTEMPTS
    db.session.commit()
    key = ("outbound_messages", '{"provider":"cloud","status":"failed"}')
    failed_before = counters().get(key, 0)
    assert reconcile_outbox()["failed"] == 1
    db.session.refresh(message)
    assert message.status == "failed" and message.error_code == "retries_exhausted"
    assert counters().get(key, 0) == failed_before + 1  # counted in /metrics


def test_concurrent_first_sends_to_a_new_phone(
    app: Flask, api: Api, sandbox_account: WhatsAppAccount
) -> None:
    token = api.headers["Authorization"]
    statuses: list[int] = []
    barrier = threading.Barrier(6)

    def send(i: int) -> None:
        with app.app_context():
            client = app.test_client()
            barrier.wait(timeout=10)
            response = client.post(
                "/api/v1/messages",
                json={"to": "+5511977770000", "text": f"m{i}"},
                headers={"Authorization": token},
            )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert statuses == [202] * 6
    assert db.session.scalar(select(func.count()).select_from(Lead)) == 1


def test_an_idempotency_key_is_tied_to_its_request(
    api: Api, sandbox_account: WhatsAppAccount, owner: factories.Person
) -> None:
    first = api.post("/messages", {"to": "+5511988887777", "text": "oi", "idempotency_key": "k1"})
    other = api.post("/messages", {"to": "+5511988886666", "text": "oi", "idempotency_key": "k1"})
    assert other.status_code == 409 and other.json["error"]["code"] == "idempotency_key_reused"
    lead = db.session.scalar(select(Lead).where(Lead.phone == "+5511988887777"))
    assert lead is not None
    lead.opted_out_at = utcnow()
    db.session.commit()
    retry = api.post("/messages", {"to": "+5511988887777", "text": "oi", "idempotency_key": "k1"})
    assert retry.status_code == 202 and retry.json["id"] == first.json["id"]


def test_unreadable_secrets_are_a_clear_state_not_a_500(
    app: Flask,
    client: FlaskClient,
    api: Api,
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(app.config, "ENCRYPTION_KEY", "a different key than the one used to store them")
    payload = graph_api.message_payload(text="x")
    assert post_webhook(client, cloud_account, payload).status_code == 401
    api.post("/messages", {"to": "+5511988887777", "text": "x"})
    db.session.refresh(cloud_account)
    assert cloud_account.health == "logged_out" and "decrypt" in (cloud_account.health_reason or "")


def test_access_log_masks_webhook_keys_and_verify_tokens(
    client: FlaskClient, cloud_account: WhatsAppAccount, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="crm.access"):
        client.get(f"/webhooks/cloud/{cloud_account.webhook_key}?hub.mode=subscribe&hub.verify_token=s3cr3t")
        client.get("/invite/some-secret-token")
    text = caplog.text
    assert (
        "s3cr3t" not in text
        and (cloud_account.webhook_key or "x") not in text
        and "some-secret-token" not in text
    )
    assert "/webhooks/cloud/…" in text


def test_webhook_errors_are_json(client: FlaskClient) -> None:
    response = client.post("/webhooks/cloud/nope", data=json.dumps({}))
    assert response.status_code == 404 and response.json == {
        "error": {"code": "not_found", "message": "Not found."}
    }


def test_a_retried_delivery_does_not_bring_a_deleted_lead_back(
    client: FlaskClient, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    payload = graph_api.message_payload(text="old", wamid="wamid.old")
    post_webhook(client, cloud_account, payload)
    lead = db.session.scalar(select(Lead))
    assert lead is not None
    lead.deleted_at = utcnow()
    db.session.commit()
    post_webhook(client, cloud_account, payload)  # Meta retries an old delivery
    db.session.refresh(lead)
    assert lead.deleted_at is not None
    post_webhook(client, cloud_account, graph_api.message_payload(text="new", wamid="wamid.new"))
    db.session.refresh(lead)
    assert lead.deleted_at is None  # a new message from them: the lead is back
