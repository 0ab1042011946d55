"""Starting sends: an agent's reply in a conversation, or a message to a phone number."""

from __future__ import annotations

from flask_babel import gettext as _
from sqlalchemy import select
from werkzeug.datastructures import FileStorage

from crm.errors import ValidationFailed
from crm.extensions import db
from crm.inbox.services import conversation_for, get_conversation, latest_conversation_of_lead
from crm.leads.consent import opted_out, phone_opted_out
from crm.leads.models import Lead, LeadSource
from crm.leads.phones import to_e164
from crm.leads.services import insert_lead_if_new, workspace_country
from crm.tenancy import get_scoped
from crm.textcheck import check_clean_text
from crm.whatsapp.models import MessageTemplate, WhatsAppAccount
from crm.whatsapp.outbox import OptedOut, Queued, find_by_idempotency_key, fingerprint_of, queue_outbound
from crm.whatsapp.routing import account_for_new_lead

MAX_TEXT = 4096  # WhatsApp's limit for a text body


def check_text(text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValidationFailed(_("Write the message text."), code="invalid_text")
    if len(text) > MAX_TEXT:
        raise ValidationFailed(
            _("A message can have at most %(n)d characters.", n=MAX_TEXT), code="invalid_text"
        )
    return check_clean_text(text, code="invalid_text")


def check_idempotency_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= 200:
        raise ValidationFailed(
            _("idempotency_key must be a string of 1 to 200 characters."), code="invalid_idempotency_key"
        )
    return check_clean_text(key, code="invalid_idempotency_key")


def reply(
    workspace_id: int,
    conversation_id: int,
    text: object,
    *,
    user_id: int | None,
    idempotency_key: object = None,
    author: str = "agent",
) -> Queued:
    """An agent's reply. Like any human reply it turns the AI off for this conversation."""
    conversation = get_conversation(workspace_id, conversation_id)
    clean = check_text(text)
    return queue_outbound(
        workspace_id,
        conversation,
        text=clean,
        author=author,
        author_user_id=user_id,
        idempotency_key=check_idempotency_key(idempotency_key),
        fingerprint=fingerprint_of("conversation", conversation.id, clean),
    )


def _lead_for_phone(workspace_id: int, e164: str, source: LeadSource) -> Lead:
    """The workspace's lead for this phone, created (not opted in) if new; concurrent first sends
    to the same new phone end with one lead."""
    insert_lead_if_new(workspace_id, e164, None, None, source=source)
    lead = db.session.scalar(select(Lead).where(Lead.workspace_id == workspace_id, Lead.phone == e164))
    assert lead is not None
    return lead


def send_to_phone(
    workspace_id: int,
    to: object,
    text: object,
    *,
    account_id: int | None = None,
    idempotency_key: object = None,
    author: str = "api",
    user_id: int | None = None,
) -> Queued:
    """Send to a phone number. Without ``account_id`` the lead's existing conversation's number
    carries it, else routing picks one; the lead is created if new (not opted in)."""
    if not isinstance(to, str):
        raise ValidationFailed(_("'to' must be a phone number."), code="invalid_phone")
    clean = check_text(text)
    key = check_idempotency_key(idempotency_key)
    e164 = to_e164(to, workspace_country(workspace_id))
    fingerprint = fingerprint_of("phone", e164, account_id, clean)
    if key:
        # A retry of a request that already went through answers with its message, whatever
        # happened since (an opt-out, a number going down).
        existing = find_by_idempotency_key(workspace_id, key, fingerprint)
        if existing is not None:
            return Queued(existing, False)
    account = get_scoped(WhatsAppAccount, workspace_id, account_id) if account_id is not None else None
    lead = db.session.scalar(select(Lead).where(Lead.workspace_id == workspace_id, Lead.phone == e164))
    if phone_opted_out(workspace_id, e164):  # this line, however it is spelt, said stop
        raise OptedOut()
    if lead is None:
        lead = _lead_for_phone(workspace_id, e164, LeadSource.API if author == "api" else LeadSource.MANUAL)
    elif lead.deleted_at is not None:
        lead.deleted_at = None
    account = account or carrying_number(workspace_id, lead.id)
    conversation = conversation_for(workspace_id, account.id, lead.id)
    return queue_outbound(
        workspace_id,
        conversation,
        text=clean,
        author=author,
        author_user_id=user_id,
        idempotency_key=key,
        fingerprint=fingerprint,
    )


def carrying_number(workspace_id: int, lead_id: int, account_id: int | None = None) -> WhatsAppAccount:
    """The number a message to this lead goes out on: the one chosen, else the one of their
    latest conversation, else the one routing gives them (``NoAccountAvailable`` if none)."""
    if account_id is not None:
        return get_scoped(WhatsAppAccount, workspace_id, account_id)
    latest = latest_conversation_of_lead(workspace_id, lead_id)
    found = db.session.get(WhatsAppAccount, latest.account_id) if latest else None
    return found or account_for_new_lead(workspace_id, lead_id)


def checked_template(workspace_id: int, template_id: int | None, account_id: int) -> MessageTemplate:
    """The template chosen to go out on this number (a clear error for none or another's)."""
    from crm.whatsapp import templates

    if template_id is None:
        raise ValidationFailed(_("Choose a template."), code="invalid_template")
    template = templates.get_template(workspace_id, template_id)
    if template.account_id != account_id:
        raise ValidationFailed(_("That template belongs to another number."), code="invalid_template")
    return template


def send_template(
    workspace_id: int,
    conversation_id: int,
    template_id: int | None,
    values: dict[str, str],
    *,
    user_id: int | None,
    idempotency_key: object = None,
) -> Queued:
    """An approved template, filled in, to a customer whose 24-hour window is closed (or open:
    templates are always allowed)."""
    from crm.whatsapp import templates

    conversation = get_conversation(workspace_id, conversation_id)
    template = checked_template(workspace_id, template_id, conversation.account_id)
    filled = templates.fill(template, values)
    return queue_outbound(
        workspace_id,
        conversation,
        text=filled.text,
        type="template",
        payload=filled.payload,
        author="agent",
        author_user_id=user_id,
        idempotency_key=check_idempotency_key(idempotency_key),
        fingerprint=fingerprint_of("template", conversation.id, template.id, sorted(values.items())),
    )


def reply_with_file(
    workspace_id: int,
    conversation_id: int,
    upload: FileStorage,
    caption: object,
    *,
    user_id: int | None,
    idempotency_key: object = None,
    author: str = "agent",
) -> Queued:
    """An agent's file (with an optional caption). The file is checked and stored now; it is
    compressed or converted by a task, and the message is sent once that is done. Audio carries
    no caption on WhatsApp, so a caption typed with it goes first as its own message."""
    from crm.media.limits import request_cap
    from crm.media.outbound import accept_upload
    from crm.media.services import check_caption, spooled

    conversation = get_conversation(workspace_id, conversation_id)
    account = db.session.get(WhatsAppAccount, conversation.account_id)
    assert account is not None
    account_id, provider = account.id, account.provider
    clean_caption = check_caption(caption)
    key = check_idempotency_key(idempotency_key)
    lead = db.session.get(Lead, conversation.lead_id)
    said_stop = lead is not None and opted_out(lead)
    with spooled(upload, request_cap(provider)) as spool:
        fingerprint = fingerprint_of("file", conversation_id, spool.sha256, clean_caption)
        if key:
            existing = find_by_idempotency_key(workspace_id, key, fingerprint)
            if existing is not None:
                return Queued(existing, False)
        if said_stop:
            raise OptedOut()
        db.session.commit()  # no transaction stays open while the file is checked and stored
        media = accept_upload(workspace_id, account_id, provider, spool)
    text = clean_caption if media.kind in ("image", "video", "document") else ""
    if clean_caption and not text:
        queue_outbound(
            workspace_id,
            conversation,
            text=clean_caption,
            author=author,
            author_user_id=user_id,
            idempotency_key=f"{key}:caption" if key else None,
            fingerprint=fingerprint_of("caption", fingerprint),
        )
    return queue_outbound(
        workspace_id,
        conversation,
        text=text,
        type=media.kind,
        author=author,
        author_user_id=user_id,
        idempotency_key=key,
        fingerprint=fingerprint,
        media_file_id=media.id,
    )
