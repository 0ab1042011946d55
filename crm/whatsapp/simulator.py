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
from crm.inbox.services import load_media
from crm.leads.models import Lead
from crm.leads.phones import to_e164
from crm.leads.services import workspace_country
from crm.media.services import Spooled
from crm.tenancy import get_scoped
from crm.whatsapp.events import InboundMessage, MediaRef
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


def customer_sends_file(
    workspace_id: int, account_id: int, phone: str, upload: Spooled, caption: str = "", name: str = ""
) -> tuple[str, int]:
    """A simulated customer sends a file (with an optional caption): it arrives like a customer's
    file from a real number, already downloaded. Returns their E.164 phone and the message id."""
    from crm.media.inbound import store_simulated
    from crm.media.services import check_caption
    from crm.media.sniff import sniff

    account = sandbox_account(workspace_id, account_id)
    e164 = to_e164(phone, workspace_country(workspace_id))
    found = sniff(upload.path)
    message = InboundMessage(
        provider_message_id=new_inbound_id(),
        type=found.kind,
        text=check_caption(caption),
        timestamp=utcnow(),
        phone=e164,
        name=name.strip()[:200] or None,
        media=MediaRef(mime_type=found.mime, filename=upload.filename, voice=found.kind == "audio"),
    )
    summary = ingest_message(account.id, message)
    store_simulated(summary.stored[0], upload)
    return e164, summary.stored[0]


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
    found = list(reversed(list(messages)))
    load_media(found)
    return found
