"""The WebQR gateway end to end, with the fake neonize client emitting neonize's own events."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Conversation, Message
from crm.leads.models import Lead
from crm.whatsapp import webqr
from crm.whatsapp.accounts import create_account
from crm.whatsapp.gateway import Gateway
from crm.whatsapp.models import Outbox, WebQRSession, WhatsAppAccount, WhatsAppGroup
from tests import factories
from tests.fakes.neonize_fake import FakeClient, FakeNeonize
from tests.whatsapp.conftest import Api

PHONE = "5511999990000"


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.session.expire_all()
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def number(owner: factories.Person) -> WhatsAppAccount:
    account = create_account(owner.workspace_id, provider="webqr", name="Celular da loja")
    webqr.save_pacing(
        owner.workspace_id, account.id, {"quiet_hours": False, "jitter_min": 0, "jitter_max": 0}
    )
    return account


class RunningGateway:
    def __init__(self, app: Flask, fake: FakeNeonize, owner: str = "gateway-1"):
        self.fake = fake
        self.gateway = Gateway(app, fake, poll_seconds=0.05, owner=owner)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.gateway.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def client(self, account: WhatsAppAccount) -> FakeClient:
        client = self.fake.wait_for_client(f"zapdesk-{account.id}")
        client.wait_connected()
        return client

    def shutdown(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


@pytest.fixture
def fake() -> FakeNeonize:
    return FakeNeonize()


@pytest.fixture
def gateway(app: Flask, fake: FakeNeonize) -> Iterator[RunningGateway]:
    running = RunningGateway(app, fake)
    yield running
    running.shutdown()


def session_of(account: WhatsAppAccount) -> WebQRSession:
    row = db.session.get(WebQRSession, account.id)
    assert row is not None
    return row


def paired(gateway: RunningGateway, owner: factories.Person, number: WhatsAppAccount) -> FakeClient:
    webqr.request_connect(owner.workspace_id, number.id)
    client = gateway.client(number)
    client.emit_qr_codes(["2@first-code"])
    client.pair(PHONE)
    wait_until(lambda: session_of(number).state == "connected", what="connected")
    return client


def test_qr_codes_then_pairing(
    gateway: RunningGateway, owner: factories.Person, number: WhatsAppAccount
) -> None:
    webqr.request_connect(owner.workspace_id, number.id)
    client = gateway.client(number)
    client.emit_qr_codes(["2@first"])
    wait_until(lambda: session_of(number).qr_code == "2@first", what="first QR")
    row = session_of(number)
    assert row.state == "waiting_for_scan" and row.qr_expires_at is not None
    assert 50 < (row.qr_expires_at - utcnow()).total_seconds() <= 60  # the first code lives ~60 s
    view = webqr.pairing_view(owner.workspace_id, number.id)
    assert view["qr_svg"] and view["qr_svg"].startswith("<svg")
    client.emit_qr_codes(["2@second"])
    wait_until(lambda: session_of(number).qr_code == "2@second", what="second QR")
    assert (session_of(number).qr_expires_at - utcnow()).total_seconds() <= 20  # type: ignore[operator]
    client.pair(PHONE)
    wait_until(lambda: session_of(number).state == "connected", what="connected")
    db.session.refresh(number)
    assert number.phone == f"+{PHONE}" and number.health == "connected"
    assert session_of(number).qr_code is None and session_of(number).paired_at is not None


def test_codes_run_out_and_a_new_qr_is_offered(
    gateway: RunningGateway, owner: factories.Person, number: WhatsAppAccount
) -> None:
    webqr.request_connect(owner.workspace_id, number.id)
    client = gateway.client(number)
    client.emit_qr_codes([f"2@code-{i}" for i in range(webqr.MAX_QR_CODES + 1)])
    wait_until(lambda: session_of(number).state == "qr_expired", what="expiry")
    wait_until(lambda: session_of(number).desired == "stopped", what="stop, not loop")
    assert webqr.pairing_view(owner.workspace_id, number.id)["qr_svg"] is None
    # "New QR" starts a fresh series.
    webqr.request_connect(owner.workspace_id, number.id)
    wait_until(
        lambda: len([c for c in gateway.fake.clients.values() if c._running.is_set()]) == 1,
        what="a new session",
    )


def test_pairing_by_phone_code(
    gateway: RunningGateway, owner: factories.Person, number: WhatsAppAccount
) -> None:
    webqr.request_connect(owner.workspace_id, number.id, pair_phone="(11) 99999-0000")
    client = gateway.client(number)
    client.emit_qr_codes(["2@hidden"])  # whatsmeow starts the QR loop; we ask for a code instead
    wait_until(lambda: bool(session_of(number).pair_code), what="pair code")
    assert len((session_of(number).pair_code or "").replace("-", "")) == 8
    assert session_of(number).qr_code is None  # no QR shown while pairing by code
    assert client.pair_code_requests and client.pair_code_requests[0][0] == "5511999990000"


def test_incoming_messages_receipts_and_sends(
    app: Flask, gateway: RunningGateway, owner: factories.Person, number: WhatsAppAccount, api: Api
) -> None:
    client = paired(gateway, owner, number)
    msg_id = client.incoming_text("5511988887777", "Oi, vocês abrem domingo?", push_name="Carla")
    wait_until(lambda: db.session.scalar(select(func.count()).select_from(Message)) == 1, what="ingest")
    inbound = db.session.scalar(select(Message))
    assert inbound is not None and inbound.provider_message_id == msg_id and inbound.provider == "webqr"
    lead = db.session.scalar(select(Lead))
    assert lead is not None and lead.phone == "+5511988887777" and lead.name == "Carla"
    response = api.post(
        f"/conversations/{inbound.conversation_id}/messages", {"text": "Abrimos sim, das 8h às 12h"}
    )
    assert response.status_code == 202
    wait_until(lambda: len(client.sent) == 1, what="the gateway sends it")
    assert (
        client.sent[0][0].startswith("5511988887777@") and client.sent[0][1] == "Abrimos sim, das 8h às 12h"
    )
    wait_until(
        lambda: (m := db.session.get(Message, response.json["id"])) is not None and m.status == "sent",
        what="sent",
    )
    reply = db.session.get(Message, response.json["id"])
    assert reply is not None and reply.provider_message_id
    client.receipt([reply.provider_message_id], "read", "5511988887777")
    wait_until(lambda: db.session.get(Message, response.json["id"]).status == "read", what="read receipt")  # type: ignore[union-attr]


def test_logout_mid_send_leaves_the_rest_queued(
    gateway: RunningGateway, owner: factories.Person, number: WhatsAppAccount, api: Api
) -> None:
    client = paired(gateway, owner, number)
    webqr.save_pacing(
        owner.workspace_id, number.id, {"quiet_hours": False, "jitter_min": 30, "jitter_max": 30}
    )  # one send, then a long gap
    conversation_id = factories.inbound(number.id, phone="+5511988880000")
    for i in range(3):
        api.post(f"/conversations/{conversation_id}/messages", {"text": f"parte {i}"})
    # The first send is recorded (the fake phone has it a moment before the row says "sent").
    wait_until(
        lambda: len(client.sent) == 1 and "sent" in db.session.scalars(select(Outbox.state)).all(),
        what="first send",
    )
    client.log_out()
    wait_until(lambda: session_of(number).state == "logged_out", what="logged out")
    db.session.refresh(number)
    assert number.health == "logged_out" and "Scan a new QR" in (number.health_reason or "")
    states = sorted(db.session.scalars(select(Outbox.state)))
    assert states == ["queued", "queued", "sent"]  # nothing failed, nothing lost
    assert len(client.sent) == 1


def test_temporary_ban_pauses_the_number(
    gateway: RunningGateway, owner: factories.Person, number: WhatsAppAccount
) -> None:
    client = paired(gateway, owner, number)
    client.temporary_ban(code=101, expire_seconds=3600)
    wait_until(lambda: session_of(number).state == "banned", what="banned")
    db.session.refresh(number)
    assert number.health == "blocked" and number.paused_until is not None
    assert number.paused_until > utcnow() + timedelta(minutes=50)
    webqr.resume_sending(owner.workspace_id, number.id)
    db.session.refresh(number)
    assert number.paused_until is None


def test_groups_are_synced_on_connect_and_listed_by_the_api(
    gateway: RunningGateway, owner: factories.Person, number: WhatsAppAccount, api: Api
) -> None:
    webqr.request_connect(owner.workspace_id, number.id)
    client = gateway.client(number)
    client.set_groups(
        [
            ("120363000000000001@g.us", "Clientes VIP", 42, True),
            ("120363000000000002@g.us", "Fornecedores", 7, False),
        ]
    )
    client.emit_qr_codes(["2@c"])
    client.pair(PHONE)
    wait_until(lambda: db.session.scalar(select(func.count()).select_from(WhatsAppGroup)) == 2, what="groups")
    body = api.get(f"/whatsapp/groups?account_id={number.id}").json
    assert {(g["name"], g["participants"]) for g in body["data"]} == {
        ("Clientes VIP", 42),
        ("Fornecedores", 7),
    }
    assert set(body["data"][0]) >= {"id", "jid", "name", "participants"}
    assert api.get("/whatsapp/groups?account_id=abc").status_code == 400


def test_a_restarted_gateway_reconnects_without_a_new_scan(
    app: Flask, fake: FakeNeonize, owner: factories.Person, number: WhatsAppAccount
) -> None:
    first = RunningGateway(app, fake)
    try:
        paired(first, owner, number)
    finally:
        first.shutdown()
    fake.clients.clear()
    second = RunningGateway(app, fake, owner="gateway-1")
    try:
        client = second.client(number)
        assert client._session() is not None  # the stored session is found: no QR needed
        client.emit_connected(PHONE)
        wait_until(lambda: session_of(number).state == "connected", what="reconnected")
    finally:
        second.shutdown()


def test_one_crashing_session_does_not_stop_the_others(
    gateway: RunningGateway, owner: factories.Person, number: WhatsAppAccount
) -> None:
    other = create_account(owner.workspace_id, provider="webqr", name="Outro")
    original = gateway.fake.__call__
    crashing = f"zapdesk-{number.id}"

    def factory(name: str, **kwargs: object) -> FakeClient:
        client = original(name, **kwargs)  # type: ignore[arg-type]
        if kwargs.get("uuid") == crashing:
            client.crash_on_connect = True
        return client

    gateway.gateway.factory = factory
    webqr.request_connect(owner.workspace_id, number.id)
    webqr.request_connect(owner.workspace_id, other.id)
    healthy = gateway.fake.wait_for_client(f"zapdesk-{other.id}")
    healthy.wait_connected()
    healthy.emit_qr_codes(["2@x"])
    wait_until(lambda: session_of(other).state == "waiting_for_scan", what="the healthy session")
    wait_until(
        lambda: (
            "connect_error"
            in {
                e.kind
                for e in __import__("crm.whatsapp.accounts", fromlist=["x"]).health_history(
                    owner.workspace_id, number.id
                )
            }
        ),
        what="the crash recorded",
    )
    number_id = number.id
    wait_until(
        lambda: gateway.gateway.failures.get(number_id, (0, 0.0))[0] >= 1, what="backing off, not spinning"
    )


def test_a_session_owned_by_another_live_gateway_is_left_alone(
    app: Flask, fake: FakeNeonize, owner: factories.Person, number: WhatsAppAccount
) -> None:
    webqr.request_connect(owner.workspace_id, number.id)
    row = session_of(number)
    row.owner, row.heartbeat_at = "someone-else:1", utcnow()
    db.session.commit()
    running = RunningGateway(app, fake, owner="gateway-2")
    try:
        time.sleep(0.4)
        assert f"zapdesk-{number.id}" not in fake.clients  # no second owner: no StreamReplaced
    finally:
        running.shutdown()


def test_group_messages_land_in_the_group_chat_and_replies_go_to_the_group(
    gateway: RunningGateway, owner: factories.Person, number: WhatsAppAccount, api: Api
) -> None:
    group = "120363000000000009@g.us"
    webqr.request_connect(owner.workspace_id, number.id)
    client = gateway.client(number)
    client.set_groups([(group, "Clientes VIP", 3, False)])
    client.emit_qr_codes(["2@c"])
    client.pair(PHONE)
    wait_until(lambda: db.session.scalar(select(func.count()).select_from(WhatsAppGroup)) == 1, what="groups")
    client.incoming_text("5511911112222", "Bom dia, grupo!", push_name="Ana", group_jid=group)
    client.incoming_text("5511933334444", "Bom dia!", push_name="Beto", group_jid=group)
    wait_until(lambda: db.session.scalar(select(func.count()).select_from(Message)) == 2, what="ingest")

    conversations = db.session.scalars(select(Conversation)).all()
    assert len(conversations) == 1  # one chat: the group's, not one per participant
    chat = db.session.get(Lead, conversations[0].lead_id)
    assert chat is not None and (chat.kind, chat.bsuid, chat.name) == ("group", group, "Clientes VIP")
    assert db.session.scalar(select(func.count()).select_from(Lead)) == 1  # participants are not leads
    senders = [m.payload["sender"] for m in db.session.scalars(select(Message).order_by(Message.id))]
    assert [(s["name"], s["phone"]) for s in senders] == [
        ("Ana", "+5511911112222"),
        ("Beto", "+5511933334444"),
    ]
    assert api.get("/leads").json["data"] == []  # a group is never among the leads

    response = api.post(f"/conversations/{conversations[0].id}/messages", {"text": "Bom dia a todos"})
    assert response.status_code == 202
    wait_until(lambda: len(client.sent) == 1, what="the gateway sends it")
    assert client.sent[0] == (group, "Bom dia a todos")
