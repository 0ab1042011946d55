"""The sandbox number's "customer phone": type as a customer, see what the business sent back.

Messages typed here go through the same ingest path as a real provider's webhook.
"""

from __future__ import annotations

from flask_babel import gettext as _
from sqlalchemy import select

from crm.db import utcnow
from crm.errors import ValidationFailed
from crm.extensions import db
from crm.inbox.models import Conversation, Message
from crm.inbox.sending import check_text
from crm.leads.models import Lead
from crm.leads.phones import to_e164
from crm.leads.services import workspace_country
from crm.tenancy import get_scoped
from crm.whatsapp.events import InboundMessage
from crm.whatsapp.inbound import ingest_message
from crm.whatsapp.models import WhatsAppAccount
from crm.whatsapp.providers.sandbox import new_inbound_id


def sandbox_account(workspace_id: int, account_id: int) -> WhatsAppAccount:
    account = get_scoped(WhatsAppAccount, workspace_id, account_id)
    if account.provider != "sandbox":
        raise ValidationFailed(_("Only sandbox numbers have a simulator."), code="not_sandbox")
    return account


def customer_writes(workspace_id: int, account_id: int, phone: str, text: str, name: str = "") -> str:
    """A simulated customer sends ``text``; returns their E.164 phone."""
    account = sandbox_account(workspace_id, account_id)
    e164 = to_e164(phone, workspace_country(workspace_id))
    message = InboundMessage(
        provider_message_id=new_inbound_id(),
        type="text",
        text=check_text(text),
        timestamp=utcnow(),
        phone=e164,
        name=name.strip()[:200] or None,
    )
    ingest_message(account.id, message)
    return e164


def thread(workspace_id: int, account_id: int, phone: str, limit: int = 100) -> list[Message]:
    """The simulated customer's conversation with the sandbox number, oldest first."""
    account = sandbox_account(workspace_id, account_id)
    lead = db.session.scalar(select(Lead).where(Lead.workspace_id == workspace_id, Lead.phone == phone))
    if lead is None:
        return []
    conversation = db.session.scalar(
        select(Conversation).where(Conversation.account_id == account.id, Conversation.lead_id == lead.id)
    )
    if conversation is None:
        return []
    messages = db.session.scalars(
        select(Message)
        .where(Message.conversation_id == conversation.id)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    )
    return list(reversed(list(messages)))
