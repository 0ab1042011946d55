"""Ingest's store step (one statement on PostgreSQL, step by step elsewhere): what a message does
to its lead and conversation, for new and known senders alike."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Conversation, Message
from crm.leads.models import Lead
from crm.whatsapp.events import InboundMessage, MediaRef
from crm.whatsapp.inbound import IngestSummary, ingest_message
from tests import factories

PHONE = "+5511988887777"


@pytest.fixture
def number(owner: factories.Person) -> int:
    return factories.sandbox_account(owner)


def _receive(account_id: int, **fields: object) -> IngestSummary:
    values: dict[str, object] = {
        "provider_message_id": f"test.{uuid.uuid4().hex}",
        "type": "text",
        "text": "Oi",
        "timestamp": utcnow(),
        "phone": PHONE,
        **fields,
    }
    summary = ingest_message(account_id, InboundMessage(**values))  # type: ignore[arg-type]
    db.session.expire_all()
    return summary


def _conversation(account_id: int) -> Conversation:
    found = db.session.scalar(select(Conversation).where(Conversation.account_id == account_id))
    assert found is not None
    return found


def test_a_known_senders_message_reopens_and_counts_unread(number: int) -> None:
    _receive(number)
    conversation = _conversation(number)
    conversation.status, conversation.unread_count = "closed", 0
    db.session.commit()
    summary = _receive(number, text="De novo")
    conversation = _conversation(number)
    assert (conversation.status, conversation.unread_count) == ("open", 1)
    message = db.session.get(Message, summary.stored[0])
    assert message is not None
    assert (message.text, message.conversation_id, message.author) == ("De novo", conversation.id, "lead")


def test_a_late_old_message_does_not_move_the_conversation_back(number: int) -> None:
    now = utcnow()
    _receive(number, timestamp=now)
    _receive(number, timestamp=now - timedelta(hours=2))
    conversation = _conversation(number)
    assert conversation.last_message_at == now
    assert conversation.unread_count == 2
    _receive(number, timestamp=now + timedelta(minutes=1))
    assert _conversation(number).last_message_at == now + timedelta(minutes=1)


def test_an_echo_from_the_business_phone_turns_the_bot_off_and_is_not_unread(number: int) -> None:
    _receive(number)
    _receive(number, direction="out", text="Resposta do celular")
    conversation = _conversation(number)
    assert conversation.ai_enabled is False
    assert conversation.unread_count == 1
    echo = db.session.scalar(select(Message).where(Message.direction == "out"))
    assert echo is not None and (echo.author, echo.status) == ("agent", "sent")


def test_a_retried_message_changes_nothing(number: int) -> None:
    first = _receive(number, provider_message_id="wamid.same")
    again = _receive(number, provider_message_id="wamid.same", text="changed")
    assert len(first.stored) == 1 and again.stored == [] and again.duplicates == 1
    assert _conversation(number).unread_count == 1
    assert db.session.scalars(select(Message.text)).all() == ["Oi"]


def test_what_a_later_message_teaches_about_a_known_sender_is_kept(number: int) -> None:
    _receive(number, name=None)
    lead = db.session.scalar(select(Lead))
    assert lead is not None and (lead.name, lead.bsuid) == ("", None)
    _receive(number, name="Maria", bsuid="BR.11AbC")
    db.session.refresh(lead)
    assert (lead.name, lead.bsuid) == ("Maria", "BR.11AbC")
    _receive(number, name="Outro nome")  # a name we already have is not overwritten by the profile
    db.session.refresh(lead)
    assert lead.name == "Maria"


def test_a_known_lead_writing_to_another_number_gets_a_conversation_there(
    owner: factories.Person, number: int
) -> None:
    other = factories.sandbox_account(owner, name="Second")
    _receive(number)
    _receive(other)
    assert db.session.scalar(select(db.func.count()).select_from(Lead)) == 1
    conversations = db.session.scalars(select(Conversation).order_by(Conversation.id)).all()
    assert [c.account_id for c in conversations] == [number, other]
    assert {c.lead_id for c in conversations} == {conversations[0].lead_id}


def test_a_sender_known_only_by_bsuid_is_found_again(number: int) -> None:
    _receive(number, phone=None, bsuid="BR.only")
    _receive(number, phone=None, bsuid="BR.only")
    assert db.session.scalar(select(db.func.count()).select_from(Lead)) == 1
    assert _conversation(number).unread_count == 2


def test_media_details_are_kept_with_the_message(number: int) -> None:
    media = MediaRef(provider_media_id="media-1", mime_type="image/jpeg", filename=None, sha256="abc")
    summary = _receive(number, type="image", text="foto", media=media)
    message = db.session.get(Message, summary.stored[0])
    assert message is not None
    assert (message.type, message.media_id) == ("image", "media-1")
    assert message.payload == {"media": media.described()}
    assert "wire" not in message.payload["media"]  # a WebQR file's keys are never kept in clear


def test_a_known_customer_writing_from_a_new_phone_is_stored_with_them(number: int) -> None:
    _receive(number, phone="+5511911110000", bsuid="BR.same-person", name="Rita")
    summary = _receive(number, phone="+5511922220000", bsuid="BR.same-person", text="Troquei de chip")
    assert len(summary.stored) == 1
    assert db.session.scalar(select(db.func.count()).select_from(Lead)) == 1
    assert _conversation(number).unread_count == 2
