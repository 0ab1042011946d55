"""Ingest: every provider's inbound messages and statuses go through here.

One transaction per delivery (a webhook POST, a gateway event, a simulator message): upsert the
lead and the conversation, insert the message. Duplicates are stopped by the UNIQUE constraint
on (account, provider message id) with ``ON CONFLICT DO NOTHING``, never by looking first, so
concurrent duplicate deliveries store one row and publish one event. Events and follow-up tasks
are announced only after the commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError, OperationalError

from crm.extensions import db
from crm.inbox import assignment
from crm.inbox.services import open_conversation
from crm.leads.consent import is_keyword
from crm.leads.models import Lead
from crm.leads.services import insert_lead_if_new
from crm.ops.metrics import record_ingest
from crm.realtime.broker import publish_after_commit
from crm.whatsapp.accounts import NumberRef, number_refs
from crm.whatsapp.events import AccountSignal, InboundMessage, ParsedWebhook, StatusUpdate
from crm.whatsapp.ingest_sql import NewMessage, store_for
from crm.whatsapp.models import WhatsAppAccount
from crm.whatsapp.statuses import apply_status
from crm.worker import enqueue_after_commit

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
        new_id = insert_lead_if_new(workspace_id, phone, bsuid, name)
        if new_id is not None:
            lead = db.session.get(Lead, new_id)
        else:  # created meanwhile by a concurrent delivery
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


def _group_name(account_id: int, jid: str) -> str | None:
    from crm.whatsapp.models import WhatsAppGroup

    name = db.session.scalar(
        select(WhatsAppGroup.name).where(WhatsAppGroup.account_id == account_id, WhatsAppGroup.jid == jid)
    )
    return name or None


def _store_message(account: NumberRef, msg: InboundMessage) -> int | None:
    """Insert one message and bump its conversation; None when it was already stored or has no
    sender at all (logged: such a message can't be answered, and must not make Meta retry the
    whole delivery forever).

    A group message goes to the group's conversation (its "lead" is the group, kind ``group``);
    who wrote it is kept with the message (``payload["sender"]``), and no lead is made of them.
    """
    phone, bsuid = _identity(msg)
    provider_message_id = clean_text(msg.provider_message_id, 128)
    if not phone and not bsuid:
        log.warning("account %s: message %s has no sender; not stored", account.id, provider_message_id)
        return None
    name = clean_text(msg.name, 200) or None
    payload: dict[str, Any] = {"media": msg.media.described()} if msg.media else {}
    kind = "person"
    group_jid = clean_text(msg.group_jid, 128)
    if group_jid:
        payload["sender"] = {"phone": phone, "id": bsuid, "name": name}
        phone, bsuid, kind = None, group_jid, "group"
        name = _group_name(account.id, group_jid)
    new = NewMessage(
        workspace_id=account.workspace_id,
        account_id=account.id,
        provider=account.provider,
        phone=phone,
        bsuid=bsuid,
        direction=msg.direction,
        type=clean_text(msg.type, 24) or "unknown",
        text=clean_text(msg.text, 65536),
        provider_message_id=provider_message_id,
        reply_to=clean_text(msg.reply_to, 128) or None,
        media_id=clean_text(msg.media.provider_media_id, 128) or None if msg.media else None,
        payload=payload or None,
        error_code=clean_text(msg.error_code, 32) or None,
        error_title=clean_text(msg.error_title, 2000) or None,
        created_at=msg.timestamp,
    )
    connection = db.session.connection()
    store = store_for(connection)
    stored = store(connection, new)
    if stored is None:  # a new person, or new on this number: create what's missing, then store
        lead_id = insert_lead_if_new(account.workspace_id, phone, bsuid, name, kind)
        known_bsuid = bsuid
        if lead_id is None:  # we know them (maybe by another id, or in the trash)
            lead = upsert_lead(account.workspace_id, phone, bsuid, name)
            lead_id, known_bsuid = lead.id, lead.bsuid
            db.session.flush()
        open_conversation(account.workspace_id, account.id, lead_id, at=msg.timestamp)
        stored = store(connection, new)
        if stored is None and known_bsuid:
            # Found by their business-scoped id while their stored phone is another one (a new
            # SIM): the message belongs to that lead all the same.
            stored = store(connection, replace(new, phone=None, bsuid=known_bsuid))
        if stored is None:
            log.error(
                "account %s: message %s could not be matched to its lead; not stored",
                account.id,
                provider_message_id,
            )
            return None
    elif (bsuid and stored.lead_bsuid is None) or (name and not stored.lead_name):
        upsert_lead(account.workspace_id, phone, bsuid, name)  # fills in what we learnt about them
    if stored.message_id is None:
        return None  # a retried delivery: the UNIQUE constraint stopped it
    if msg.media is not None:
        _register_media(account, stored.message_id, new.type, msg)
    keyword = (
        new.incoming
        and kind == "person"
        and new.type == "text"
        and is_keyword(account.workspace_id, new.text)
    )
    if keyword:
        from crm.leads.tasks import consent_keyword_task

        enqueue_after_commit(consent_keyword_task, account.workspace_id, stored.message_id)
    elif new.incoming and kind == "person" and stored.ai_enabled:
        from crm.ai import replies as ai_replies

        if ai_replies.wants_answer(account.workspace_id, new.type, stored.assignee_id):
            ai_replies.schedule(account.workspace_id, stored.conversation_id, stored.message_id)
    if new.incoming and stored.assignee_id is None and assignment.enabled(account.workspace_id):
        from crm.whatsapp.tasks import auto_assign_task

        enqueue_after_commit(auto_assign_task, account.workspace_id, stored.conversation_id)
    publish_after_commit(
        account.workspace_id,
        {
            "type": "message.created",
            "message_id": stored.message_id,
            "conversation_id": stored.conversation_id,
        },
    )
    return stored.message_id


def _register_media(account: NumberRef, message_id: int, kind: str, msg: InboundMessage) -> None:
    """The message's file, to download after the commit (Cloud API: a worker; WebQR: the gateway
    that owns the session; the sandbox's simulator stores its files itself)."""
    from crm.media.inbound import enqueue_download_after_commit, register_inbound

    assert msg.media is not None
    media_id = register_inbound(
        account.workspace_id, account.id, message_id, kind, msg.media, encrypt=account.provider == "webqr"
    )
    enqueue_download_after_commit(media_id, account.provider)


def _route_account(path_account: NumberRef, phone_number_id: str | None) -> NumberRef:
    """Several numbers of one Meta app share its webhook URL: pick the number by its id, but only
    among the same workspace's numbers, so a webhook can never write into another workspace."""
    if not phone_number_id or path_account.phone_number_id == phone_number_id:
        return path_account
    accounts = WhatsAppAccount.__table__
    for candidate in number_refs(
        (accounts.c.workspace_id == path_account.workspace_id)
        & (accounts.c.provider == path_account.provider)
    ):
        if candidate.phone_number_id == phone_number_id:
            return candidate
    log.info("webhook for unknown phone_number_id %s stored on account %s", phone_number_id, path_account.id)
    return path_account


def _apply_signal(account: NumberRef, signal: AccountSignal) -> None:
    from crm.whatsapp.health import record_signal

    record_signal(db.session.get_one(WhatsAppAccount, account.id), signal)


def _ingest_once(path_account: NumberRef, parsed: ParsedWebhook) -> IngestSummary:
    summary = IngestSummary()
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


def _apply_one_status(account: NumberRef, status: StatusUpdate) -> None:
    apply_status(
        account.workspace_id,
        account.id,
        status.provider_message_id,
        status.status,
        status.timestamp,
        status.error_code,
        status.error_title,
    )


def ingest(account: int | NumberRef, parsed: ParsedWebhook, attempts: int = 3) -> IngestSummary:
    """Store everything in one delivery, then commit. Retried on lock conflicts (concurrent
    deliveries of the same people on PostgreSQL, a busy SQLite file)."""
    if isinstance(account, int):
        found = number_refs(cast(Table, WhatsAppAccount.__table__).c.id == account)
        if not found:
            raise LookupError(f"account {account}")
        account = found[0]
    for attempt in range(1, attempts + 1):
        try:
            summary = _ingest_once(account, parsed)
            db.session.commit()
            record_ingest(  # in-process counters, no I/O (crm/ops/metrics.py)
                account.provider, len(summary.stored), summary.duplicates, (s.status for s in parsed.statuses)
            )
            return summary
        except (OperationalError, IntegrityError):
            db.session.rollback()
            if attempt == attempts:
                raise
            log.info("ingest conflict, retrying (attempt %d)", attempt)
    raise AssertionError("unreachable")


def ingest_message(account_id: int, msg: InboundMessage) -> IngestSummary:
    return ingest(account_id, ParsedWebhook(messages=[msg]))
