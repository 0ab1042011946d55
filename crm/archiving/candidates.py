"""Which conversations an archive run takes: the age given (``--older-than``, the schedule) and
the conditions that keep a conversation in the database."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import ColumnElement, func, select

from crm.archiving.models import ArchivedConversation
from crm.db import utcnow
from crm.errors import ValidationFailed
from crm.extensions import db
from crm.inbox.models import Conversation, ConversationNote, Message

# A restored conversation is left alone this long, or the next nightly run would take it back.
RESTORED_GRACE = timedelta(days=30)
# Meta retries a webhook for up to 7 days: archiving anything younger could let a retried delivery
# of an archived message come back as a new one (its provider id left the database with it).
MIN_DAYS = 7
MAX_DAYS = 100 * 365
_AGE = re.compile(r"\s*(\d{1,6})\s*([dwy]?)\s*", re.IGNORECASE)
_DAYS_PER = {"": 1, "d": 1, "w": 7, "y": 365}


def parse_age(text: str) -> timedelta:
    """``365d``, ``52w``, ``1y`` or a plain number of days; at least MIN_DAYS."""
    match = _AGE.fullmatch(text or "")
    if match is None:
        raise ValidationFailed(
            _(
                "--older-than must be a number of days, weeks or years, such as 365d, 52w or 1y: %(value)s",
                value=text,
            ),
            code="invalid_age",
        )
    days = int(match.group(1)) * _DAYS_PER[match.group(2).lower()]
    if not MIN_DAYS <= days <= MAX_DAYS:
        raise ValidationFailed(
            _("--older-than must be between %(min)d and %(max)d days.", min=MIN_DAYS, max=MAX_DAYS),
            code="invalid_age",
        )
    return timedelta(days=days)


def old_conversations(workspace_id: int, cutoff: datetime) -> list[ColumnElement[bool]]:
    """WHERE clauses on ``conversations`` for the ones to archive: last message before the cut-off,
    nothing of theirs waiting in the outbox, not restored in the last RESTORED_GRACE."""
    from crm.whatsapp.models import Outbox, OutboxState

    waiting = (
        select(Message.conversation_id)
        .join(Outbox, Outbox.message_id == Message.id)
        .where(
            Outbox.workspace_id == workspace_id,
            Outbox.state.in_([OutboxState.QUEUED.value, OutboxState.SENDING.value]),
        )
    )
    restored = select(ArchivedConversation.id).where(
        ArchivedConversation.lead_id == Conversation.lead_id,
        ArchivedConversation.account_id == Conversation.account_id,
        ArchivedConversation.restored_at > utcnow() - RESTORED_GRACE,
    )
    return [
        Conversation.workspace_id == workspace_id,
        Conversation.last_message_at < cutoff,
        Conversation.id.not_in(waiting),
        ~restored.exists(),
    ]


def preview(workspace_id: int, cutoff: datetime) -> dict[str, Any]:
    """What a run would archive now (``--dry-run``): changes nothing."""
    where = old_conversations(workspace_id, cutoff)
    chosen = select(Conversation.id).where(*where)
    conversations, oldest, newest = db.session.execute(
        select(
            func.count(), func.min(Conversation.last_message_at), func.max(Conversation.last_message_at)
        ).where(*where)
    ).one()
    messages = db.session.scalar(select(func.count()).where(Message.conversation_id.in_(chosen)))
    notes = db.session.scalar(select(func.count()).where(ConversationNote.conversation_id.in_(chosen)))
    return {
        "workspace_id": workspace_id,
        "conversations": conversations,
        "messages": messages or 0,
        "notes": notes or 0,
        "oldest_last_message_at": oldest.isoformat() if oldest else None,
        "newest_last_message_at": newest.isoformat() if newest else None,
    }
