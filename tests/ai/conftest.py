"""Fixtures for AI replies: the Gemini stub reached through the real SDK, and a workspace with
the bot on."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from crm.ai.models import AIReply
from crm.ai.settings import update_settings
from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Conversation, Message
from crm.whatsapp.events import InboundMessage
from crm.whatsapp.inbound import ingest_message
from tests import factories
from tests.fakes.gemini import GeminiStub


@dataclass
class Bot:
    """A workspace with a sandbox number and AI replies on."""

    person: factories.Person
    account_id: int

    @property
    def workspace_id(self) -> int:
        return self.person.workspace_id

    def settings(self, **changes: Any) -> None:
        update_settings(self.workspace_id, **changes)

    def say(
        self,
        text: str,
        phone: str = "+5511988887777",
        *,
        type: str = "text",
        message_id: str | None = None,
        at: datetime | None = None,
    ) -> int:
        """A customer's message through the real ingest path; the conversation id."""
        ingest_message(
            self.account_id,
            InboundMessage(
                provider_message_id=message_id or f"wamid.{uuid.uuid4().hex}",
                type=type,
                text=text,
                timestamp=at or utcnow(),
                phone=phone,
                name="Maria",
            ),
        )
        return self.conversation_of(phone)

    def conversation_of(self, phone: str) -> int:
        from crm.leads.models import Lead

        conversation_id = db.session.scalar(
            select(Conversation.id)
            .join(Lead, Lead.id == Conversation.lead_id)
            .where(Lead.phone == phone, Conversation.account_id == self.account_id)
        )
        assert conversation_id is not None
        return conversation_id

    def replies(self, conversation_id: int) -> list[Message]:
        """What the business sent in a conversation, oldest first."""
        db.session.expire_all()
        return list(
            db.session.scalars(
                select(Message)
                .where(Message.conversation_id == conversation_id, Message.direction == "out")
                .order_by(Message.id)
            )
        )

    def jobs(self, conversation_id: int | None = None) -> list[AIReply]:
        db.session.expire_all()
        query = select(AIReply).where(AIReply.workspace_id == self.workspace_id)
        if conversation_id is not None:
            query = query.where(AIReply.conversation_id == conversation_id)
        return list(db.session.scalars(query.order_by(AIReply.id)))


@pytest.fixture
def bot(owner: factories.Person, gemini: GeminiStub) -> Bot:
    found = Bot(owner, factories.sandbox_account(owner))
    found.settings(
        enabled=True,
        instructions="Be friendly.",
        knowledge="We open Monday to Friday, 9:00 to 18:00. A haircut costs R$ 50.",
        per_minute=100,
        per_day=1000,
    )
    return found
