"""Delivery statuses: applied monotonically, whatever order they arrive in.

sent < delivered < read < played. A lower status never replaces a higher one. ``failed``
replaces only a message not yet delivered, keeps its error code and title, and is never
replaced. A status for a message id we don't know yet is parked and applied when the message
appears (the webhook can beat our own commit of the id the provider returned).
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select, update

from crm.db import insert_ignoring_conflicts, utcnow
from crm.extensions import db
from crm.inbox.keys import keyed
from crm.inbox.models import Message, MessageKey
from crm.realtime.broker import publish_after_commit
from crm.whatsapp.models import ParkedStatus

RANK = {"queued": 0, "sending": 0, "sent": 1, "delivered": 2, "read": 3, "played": 4}
PROGRESS = ("sent", "delivered", "read", "played")


def statuses_below(status: str) -> list[str]:
    """The current statuses that ``status`` may replace."""
    if status == "failed":
        return ["queued", "sending", "sent"]
    rank = RANK[status]
    return [s for s, r in RANK.items() if r < rank]  # a failed message stays failed


def apply_status(
    workspace_id: int,
    account_id: int,
    provider_message_id: str,
    status: str,
    occurred_at: datetime,
    error_code: str | None = None,
    error_title: str | None = None,
) -> bool:
    """Apply one status (no commit: the caller owns the transaction). True when a row changed.

    One conditional UPDATE: concurrent statuses for the same message can't move it backwards.
    """
    if status not in RANK and status != "failed":
        return False  # "deleted", "warning", ...: nothing to show on the message itself
    values: dict[str, object] = {"status": status}
    if status == "failed":
        values.update(error_code=error_code, error_title=error_title)
    result = db.session.execute(
        update(Message)
        .where(*keyed(account_id, provider_message_id), Message.status.in_(statuses_below(status)))
        .values(**values)
        .returning(Message.id, Message.workspace_id, Message.conversation_id)
    )
    row = result.first()
    if row is not None:
        publish_after_commit(
            row.workspace_id,
            {
                "type": "message.status",
                "message_id": row.id,
                "conversation_id": row.conversation_id,
                "status": status,
            },
        )
        return True
    known = db.session.scalar(
        select(MessageKey.message_id).where(
            MessageKey.account_id == account_id, MessageKey.provider_message_id == provider_message_id
        )
    )
    if known is None:
        db.session.execute(
            insert_ignoring_conflicts(ParkedStatus).values(  # a duplicate delivery parks nothing new
                workspace_id=workspace_id,
                account_id=account_id,
                provider_message_id=provider_message_id[:128],
                status=status,
                error_code=error_code,
                error_title=error_title,
                occurred_at=occurred_at,
                created_at=utcnow(),
            )
        )
    return False


@functools.cache
def _parked_probe() -> Any:
    parked = cast(Table, ParkedStatus.__table__)
    return (
        select(parked.c.id)
        .where(
            parked.c.account_id == bindparam("account_id"), parked.c.provider_message_id == bindparam("id")
        )
        .limit(1)
    )


def apply_parked(workspace_id: int, account_id: int, provider_message_id: str) -> None:
    """Apply, in rank order, the statuses that arrived before this message id was recorded."""
    # Almost always there are none: a plain probe first (this runs twice for every message sent).
    probe = {"account_id": account_id, "id": provider_message_id}
    if db.session.connection().execute(_parked_probe(), probe).first() is None:
        return
    parked = list(
        db.session.scalars(
            select(ParkedStatus).where(
                ParkedStatus.account_id == account_id, ParkedStatus.provider_message_id == provider_message_id
            )
        )
    )
    if not parked:
        return
    parked.sort(key=lambda p: (RANK.get(p.status, 1), p.occurred_at))
    for p in parked:
        apply_status(
            workspace_id,
            account_id,
            provider_message_id,
            p.status,
            p.occurred_at,
            p.error_code,
            p.error_title,
        )
    db.session.execute(delete(ParkedStatus).where(ParkedStatus.id.in_([p.id for p in parked])))


PARKED_TTL = timedelta(days=7)


def sweep_parked() -> int:
    """Apply parked statuses whose message has appeared since, and forget old ones (statuses for
    messages other tools sent from the same number never find a message here). No commit."""
    matches = db.session.execute(
        select(ParkedStatus.workspace_id, ParkedStatus.account_id, ParkedStatus.provider_message_id)
        .join(
            MessageKey,
            (MessageKey.account_id == ParkedStatus.account_id)
            & (MessageKey.provider_message_id == ParkedStatus.provider_message_id),
        )
        .distinct()
        .limit(1000)
    ).all()
    for workspace_id, account_id, provider_message_id in matches:
        apply_parked(workspace_id, account_id, provider_message_id)
    db.session.execute(delete(ParkedStatus).where(ParkedStatus.created_at < utcnow() - PARKED_TTL))
    return len(matches)
