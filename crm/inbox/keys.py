"""Provider message ids (``message_keys``) and what must go when messages go.

A provider id is stored once per number; its ``message_keys`` row says which message it names,
with the message's created_at so a lookup reads one partition on PostgreSQL. Nothing references
a message by foreign key (see ``Message``), so whoever deletes messages calls
``forget_messages`` first, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import ColumnElement, Select, Table, delete, insert, select, tuple_, update

from crm.extensions import db
from crm.inbox.models import Message, MessageKey

# A plain Core insert (no ORM statement machinery): this runs for every message sent.
_KEY_INSERT = insert(cast(Table, MessageKey.__table__))


def record_key(account_id: int, provider_message_id: str, message_id: int, created_at: datetime) -> None:
    """The provider's id of a message we sent (no commit). A second message with the same id on
    the number is an IntegrityError, as the unique constraint it replaces raised."""
    db.session.connection().execute(
        _KEY_INSERT,
        {
            "account_id": account_id,
            "provider_message_id": provider_message_id,
            "message_id": message_id,
            "created_at": created_at,
        },
    )


def keyed(account_id: int, provider_message_id: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """WHERE clauses that find the message with this provider id through its key: the id and the
    created_at (the partition) come from ``message_keys`` as two scalar subqueries, which
    PostgreSQL evaluates once before choosing the partition."""
    key = select(MessageKey).where(
        MessageKey.account_id == account_id, MessageKey.provider_message_id == provider_message_id
    )
    return (
        Message.id == key.with_only_columns(MessageKey.message_id).scalar_subquery(),
        Message.created_at == key.with_only_columns(MessageKey.created_at).scalar_subquery(),
    )


def forget_messages(message_ids: Sequence[int] | Select[tuple[int]]) -> None:
    """Before deleting these messages (no commit): their keys, their outbox rows, and the
    broadcast recipients' links to them (the recipients stay, as ON DELETE SET NULL did)."""
    from crm.broadcasts.models import BroadcastRecipient
    from crm.whatsapp.models import Outbox

    if isinstance(message_ids, Sequence) and not message_ids:
        return
    db.session.execute(
        delete(MessageKey).where(
            tuple_(MessageKey.account_id, MessageKey.provider_message_id).in_(
                select(Message.account_id, Message.provider_message_id).where(
                    Message.id.in_(message_ids), Message.provider_message_id.is_not(None)
                )
            )
        )
    )
    db.session.execute(delete(Outbox).where(Outbox.message_id.in_(message_ids)))
    db.session.execute(
        update(BroadcastRecipient)
        .where(BroadcastRecipient.message_id.in_(message_ids))
        .values(message_id=None)
    )
