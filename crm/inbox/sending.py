"""Starting sends: an agent's reply in a conversation, or a message to a phone number."""

from __future__ import annotations

from flask_babel import gettext as _
from sqlalchemy import select

from crm.errors import ValidationFailed
from crm.extensions import db
from crm.inbox.services import conversation_for, get_conversation, latest_conversation_of_lead
from crm.leads.models import Lead
from crm.leads.phones import to_e164
from crm.leads.services import workspace_country
from crm.tenancy import get_scoped
from crm.whatsapp.models import WhatsAppAccount
from crm.whatsapp.outbox import OptedOut, Queued, queue_outbound
from crm.whatsapp.routing import account_for_new_lead

MAX_TEXT = 4096  # WhatsApp's limit for a text body


def check_text(text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValidationFailed(_("Write the message text."), code="invalid_text")
    if len(text) > MAX_TEXT:
        raise ValidationFailed(
            _("A message can have at most %(n)d characters.", n=MAX_TEXT), code="invalid_text"
        )
    return text


def check_idempotency_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= 200:
        raise ValidationFailed(
            _("idempotency_key must be a string of 1 to 200 characters."), code="invalid_idempotency_key"
        )
    return key


def reply(
    workspace_id: int,
    conversation_id: int,
    text: object,
    *,
    user_id: int | None,
    idempotency_key: str | None = None,
    author: str = "agent",
) -> Queued:
    """An agent's reply. Like any human reply it turns the AI off for this conversation."""
    conversation = get_conversation(workspace_id, conversation_id)
    return queue_outbound(
        workspace_id,
        conversation,
        text=check_text(text),
        author=author,
        author_user_id=user_id,
        idempotency_key=check_idempotency_key(idempotency_key),
    )


def send_to_phone(
    workspace_id: int,
    to: object,
    text: object,
    *,
    account_id: int | None = None,
    idempotency_key: str | None = None,
    author: str = "api",
    user_id: int | None = None,
) -> Queued:
    """Send to a phone number. Without ``account_id`` the lead's existing conversation's number
    carries it, else routing picks one; the lead is created if new (not opted in)."""
    if not isinstance(to, str):
        raise ValidationFailed(_("'to' must be a phone number."), code="invalid_phone")
    text = check_text(text)
    key = check_idempotency_key(idempotency_key)
    e164 = to_e164(to, workspace_country(workspace_id))
    account = get_scoped(WhatsAppAccount, workspace_id, account_id) if account_id is not None else None
    lead = db.session.scalar(select(Lead).where(Lead.workspace_id == workspace_id, Lead.phone == e164))
    if lead is not None and lead.opted_out_at is not None:
        raise OptedOut()
    if lead is None:
        lead = Lead(workspace_id=workspace_id, phone=e164, name="", notes="", opt_in=False)
        db.session.add(lead)
        db.session.flush()
    elif lead.deleted_at is not None:
        lead.deleted_at = None
    if account is None:
        existing = latest_conversation_of_lead(workspace_id, lead.id)
        account = (
            db.session.get(WhatsAppAccount, existing.account_id)
            if existing
            else account_for_new_lead(workspace_id, lead.id)
        )
    assert account is not None
    conversation = conversation_for(workspace_id, account.id, lead.id)
    return queue_outbound(
        workspace_id, conversation, text=text, author=author, author_user_id=user_id, idempotency_key=key
    )
