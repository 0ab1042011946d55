"""Ingest: every provider's inbound messages and statuses go through here.

One transaction per delivery (a webhook POST, a gateway event, a simulator message): upsert the
lead and the conversation, insert the message. Duplicates are stopped by the UNIQUE constraint
on (account, provider message id) with ``ON CONFLICT DO NOTHING``, never by looking first, so
concurrent duplicate deliveries store one row and publish one event. Events and follow-up tasks
are announced only after the commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from crm.db import insert_ignoring_conflicts, utcnow
from crm.extensions import db
from crm.inbox.models import Conversation, Message
from crm.inbox.services import conversation_for
from crm.leads.models import Lead
from crm.realtime.broker import publish_after_commit
from crm.whatsapp.events import AccountSignal, InboundMessage, ParsedWebhook, StatusUpdate
from crm.whatsapp.models import WhatsAppAccount
from crm.whatsapp.statuses import apply_status

log = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    stored: list[int] = field(default_factory=list)  # new message ids
    duplicates: int = 0
    statuses: int = 0
    signals: int = 0


def upsert_lead(workspace_id: int, phone: str | None, bsuid: str | None, name: str | None) -> Lead:
    """The lead for this phone and/or business-scoped id, created if new (no commit).

    The phone the provider gives (``+<wa_id>``) is authoritative, even when a phone library would
    call it invalid. A person known only by a BSUID becomes a lead with that id and no phone.
    """
    if not phone and not bsuid:
        raise ValueError("an inbound message needs a phone or a business-scoped id")
    lead = None
    if phone:
        lead = db.session.scalar(select(Lead).where(Lead.workspace_id == workspace_id, Lead.phone == phone))
    if lead is None and bsuid:
        lead = db.session.scalar(select(Lead).where(Lead.workspace_id == workspace_id, Lead.bsuid == bsuid))
    if lead is None:
        now = utcnow()
        db.session.execute(
            insert_ignoring_conflicts(Lead).values(
                workspace_id=workspace_id,
                phone=phone,
                bsuid=bsuid,
                name=(name or "")[:200],
                notes="",
                opt_in=False,
                created_at=now,
                updated_at=now,
            )
        )
        key = Lead.phone == phone if phone else Lead.bsuid == bsuid
        lead = db.session.scalar(select(Lead).where(Lead.workspace_id == workspace_id, key))
        assert lead is not None
    if phone and lead.phone is None:
        taken = db.session.scalar(
            select(Lead.id).where(Lead.workspace_id == workspace_id, Lead.phone == phone)
        )
        if taken is None:
            lead.phone = phone
    if bsuid and lead.bsuid is None:
        taken = db.session.scalar(
            select(Lead.id).where(Lead.workspace_id == workspace_id, Lead.bsuid == bsuid)
        )
        if taken is None:
            lead.bsuid = bsuid
    if name and not lead.name:
        lead.name = name[:200]
    return lead


def clean_text(value: str | None, limit: int | None = None) -> str:
    """Text a database will take: no NUL (PostgreSQL refuses it), no lone surrogates, bounded."""
    if not value:
        return ""
    text = value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text[:limit] if limit else text


def _identity(msg: InboundMessage) -> tuple[str | None, str | None]:
    phone = msg.phone if msg.phone and len(msg.phone) <= 32 else None
    bsuid = clean_text(msg.bsuid, 128) or None
    if phone is None and msg.phone and not bsuid:
        bsuid = clean_text(msg.phone, 128)  # too long for a phone: keep it as an opaque id
    return phone, bsuid


def _store_message(account: WhatsAppAccount, msg: InboundMessage) -> int | None:
    """Insert one message and bump its conversation; None when it was already stored or has no
    sender at all (logged: such a message can't be answered, and must not make Meta retry the
    whole delivery forever)."""
    phone, bsuid = _identity(msg)
    provider_message_id = clean_text(msg.provider_message_id, 128)
    if not phone and not bsuid:
        log.warning("account %s: message %s has no sender; not stored", account.id, provider_message_id)
        return None
    lead = upsert_lead(account.workspace_id, phone, bsuid, clean_text(msg.name, 200) or None)
    conversation = conversation_for(account.workspace_id, account.id, lead.id, at=msg.timestamp)
    incoming = msg.direction == "in"
    inserted = db.session.execute(
        insert_ignoring_conflicts(Message)
        .values(
            workspace_id=account.workspace_id,
            conversation_id=conversation.id,
            account_id=account.id,
            direction=msg.direction,
            type=clean_text(msg.type, 24) or "unknown",
            text=clean_text(msg.text, 65536),
            status="received" if incoming else "sent",
            provider=account.provider,
            provider_message_id=provider_message_id,
            author="lead" if incoming else "agent",
            reply_to=clean_text(msg.reply_to, 128) or None,
            media_id=clean_text(msg.media.provider_media_id, 128) or None if msg.media else None,
            payload={"media": vars(msg.media)} if msg.media else None,
            error_code=clean_text(msg.error_code, 32) or None,
            error_title=clean_text(msg.error_title, 2000) or None,
            created_at=msg.timestamp,
        )
        .returning(Message.id)
    ).scalar()
    if inserted is None:
        return None  # a retried delivery: the UNIQUE constraint stopped it
    if lead.deleted_at is not None:
        lead.deleted_at = None  # they wrote to us again (a new message, not a retry): the lead is back
    values: dict[str, object] = {
        "status": "open",
        # Only ever forward: a late delivery of an old message doesn't reorder the inbox.
        "last_message_at": case(
            (Conversation.last_message_at < msg.timestamp, msg.timestamp), else_=Conversation.last_message_at
        ),
    }
    if incoming:
        values["unread_count"] = Conversation.unread_count + 1
    else:
        # The business answered from its own phone: a person is on it, so the bot steps back.
        values["ai_enabled"] = False
    db.session.execute(update(Conversation).where(Conversation.id == conversation.id).values(**values))
    publish_after_commit(
        account.workspace_id,
        {"type": "message.created", "message_id": inserted, "conversation_id": conversation.id},
    )
    return int(inserted)


def _route_account(path_account: WhatsAppAccount, phone_number_id: str | None) -> WhatsAppAccount:
    """Several numbers of one Meta app share its webhook URL: pick the number by its id, but only
    among the same workspace's numbers, so a webhook can never write into another workspace."""
    if not phone_number_id or str(path_account.settings.get("phone_number_id")) == phone_number_id:
        return path_account
    for candidate in db.session.scalars(
        select(WhatsAppAccount).where(
            WhatsAppAccount.workspace_id == path_account.workspace_id,
            WhatsAppAccount.provider == path_account.provider,
        )
    ):
        if str(candidate.settings.get("phone_number_id")) == phone_number_id:
            return candidate
    log.info("webhook for unknown phone_number_id %s stored on account %s", phone_number_id, path_account.id)
    return path_account


def _apply_signal(account: WhatsAppAccount, signal: AccountSignal) -> None:
    from crm.whatsapp.health import record_signal

    record_signal(account, signal)


def _ingest_once(account_id: int, parsed: ParsedWebhook) -> IngestSummary:
    summary = IngestSummary()
    path_account = db.session.get(WhatsAppAccount, account_id)
    if path_account is None:
        raise LookupError(f"account {account_id}")
    for msg in parsed.messages:
        account = _route_account(path_account, msg.phone_number_id)
        stored = _store_message(account, msg)
        if stored is None:
            summary.duplicates += 1
        else:
            summary.stored.append(stored)
    for status in parsed.statuses:
        account = _route_account(path_account, status.phone_number_id)
        _apply_one_status(account, status)
        summary.statuses += 1
    for signal in parsed.signals:
        _apply_signal(_route_account(path_account, signal.phone_number_id), signal)
        summary.signals += 1
    return summary


def _apply_one_status(account: WhatsAppAccount, status: StatusUpdate) -> None:
    apply_status(
        account.workspace_id,
        account.id,
        status.provider_message_id,
        status.status,
        status.timestamp,
        status.error_code,
        status.error_title,
    )


def ingest(account_id: int, parsed: ParsedWebhook, attempts: int = 3) -> IngestSummary:
    """Store everything in one delivery, then commit. Retried on lock conflicts (concurrent
    deliveries of the same people on PostgreSQL, a busy SQLite file)."""
    for attempt in range(1, attempts + 1):
        try:
            summary = _ingest_once(account_id, parsed)
            db.session.commit()
            return summary
        except (OperationalError, IntegrityError):
            db.session.rollback()
            if attempt == attempts:
                raise
            log.info("ingest conflict, retrying (attempt %d)", attempt)
    raise AssertionError("unreachable")


def ingest_message(account_id: int, msg: InboundMessage) -> IngestSummary:
    return ingest(account_id, ParsedWebhook(messages=[msg]))
