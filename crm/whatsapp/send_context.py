"""What sending one outbox row needs, read in one Core query right after the row is claimed.

``deliver_outbound`` runs for every message sent (100,000 for a broadcast of that size). Loading
the message, conversation, lead and number as ORM objects, and loading them again after each
commit expired them, took most of its CPU (bench/broadcast.py: 60% of a worker's samples inside
SQLAlchemy, 17% reloading expired attributes). Here they are plain columns of one row, read once:
nothing of them is expired by a commit, and nothing is reloaded inside the provider call.

The number is handed to providers and the rate limiter as a ``WhatsAppAccount`` that belongs to
no session (``account_view``): built from the row just read, and kept per process only while the
row read next time is the same, so a change (paused, blocked, new token) is seen at once.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select

from crm.extensions import db
from crm.inbox.models import Conversation, Message
from crm.leads.models import Lead
from crm.whatsapp.models import WhatsAppAccount

# Every column of the number: the view of it handed to providers and the limiter is a whole row.
ACCOUNT_COLUMNS = tuple(column.key for column in WhatsAppAccount.__table__.columns)


@dataclass(frozen=True)
class SendContext:
    """One claimed outbox row, its message, the message's lead and its conversation's number."""

    outbox_id: int
    attempts: int  # counted before this attempt
    message_id: int
    created_at: datetime  # the message's (its partition on PostgreSQL)
    workspace_id: int
    conversation_id: int
    author: str
    type: str
    text: str
    payload: dict[str, Any] | None
    media_file_id: int | None
    provider: str  # the message's, as recorded when it was queued
    account_id: int
    lead_id: int | None  # None: the lead row is gone
    phone: str | None
    bsuid: str | None
    opted_out_at: datetime | None
    lead_deleted_at: datetime | None
    broadcast_status: str | None  # the status of the broadcast this message belongs to, if any
    home: WhatsAppAccount  # the conversation's number (not attached to any session)


@functools.cache
def _context_select() -> Any:
    from crm.broadcasts.models import Broadcast, BroadcastRecipient

    messages = cast(Table, Message.__table__)
    conversations = cast(Table, Conversation.__table__)
    leads = cast(Table, Lead.__table__)
    accounts = cast(Table, WhatsAppAccount.__table__)
    recipients = cast(Table, BroadcastRecipient.__table__)
    broadcasts = cast(Table, Broadcast.__table__)
    broadcast_status = (
        select(broadcasts.c.status)
        .join(recipients, recipients.c.broadcast_id == broadcasts.c.id)
        .where(recipients.c.message_id == messages.c.id)
        .scalar_subquery()
    )
    return (
        select(
            messages.c.id,
            messages.c.created_at,
            messages.c.workspace_id,
            messages.c.conversation_id,
            messages.c.author,
            messages.c.type,
            messages.c.text,
            messages.c.payload,
            messages.c.media_file_id,
            messages.c.provider,
            messages.c.account_id,
            leads.c.id.label("lead_id"),
            leads.c.phone,
            leads.c.bsuid,
            leads.c.opted_out_at,
            leads.c.deleted_at,
            broadcast_status.label("broadcast_status"),
            *(accounts.c[name].label(f"a_{name}") for name in ACCOUNT_COLUMNS),
        )
        .select_from(messages)
        .join(conversations, conversations.c.id == messages.c.conversation_id)
        .join(accounts, accounts.c.id == conversations.c.account_id)
        .outerjoin(leads, leads.c.id == conversations.c.lead_id)
        .where(messages.c.id == bindparam("message_id"))
    )


def read_context(outbox_id: int, attempts: int, message_id: int) -> SendContext | None:
    """Everything a send needs, in one query (inside the claim's transaction); None when the
    message is gone (deleted with its conversation or lead while it waited)."""
    row = db.session.connection().execute(_context_select(), {"message_id": message_id}).first()
    if row is None:
        return None
    values = tuple(row[len(row) - len(ACCOUNT_COLUMNS) :])
    return SendContext(
        outbox_id=outbox_id,
        attempts=attempts,
        message_id=row.id,
        created_at=row.created_at,
        workspace_id=row.workspace_id,
        conversation_id=row.conversation_id,
        author=row.author,
        type=row.type,
        text=row.text,
        payload=row.payload,
        media_file_id=row.media_file_id,
        provider=row.provider,
        account_id=row.account_id,
        lead_id=row.lead_id,
        phone=row.phone,
        bsuid=row.bsuid,
        opted_out_at=row.opted_out_at,
        lead_deleted_at=row.deleted_at,
        broadcast_status=row.broadcast_status,
        home=_view(values),
    )


_views: dict[int, tuple[tuple[Any, ...], WhatsAppAccount]] = {}
_views_lock = threading.Lock()
_MAX_VIEWS = 1024


def _view(values: tuple[Any, ...]) -> WhatsAppAccount:
    """A session-less ``WhatsAppAccount`` with exactly these column values, reused while they
    stay the same (building one costs more than comparing a row)."""
    account_id = values[0]
    cached = _views.get(account_id)
    if cached is not None and cached[0] == values:
        return cached[1]
    view = WhatsAppAccount(**dict(zip(ACCOUNT_COLUMNS, values, strict=True)))
    with _views_lock:
        if len(_views) >= _MAX_VIEWS:
            _views.clear()
        _views[account_id] = (values, view)
    return view


def account_view(account: WhatsAppAccount) -> WhatsAppAccount:
    """The same number as a session-less view: read now, so that nothing of it is loaded again
    (and no transaction opened) once the claim is committed."""
    if account in db.session:
        return _view(tuple(getattr(account, name) for name in ACCOUNT_COLUMNS))
    return account
