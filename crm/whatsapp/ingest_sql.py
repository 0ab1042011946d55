"""The statements of the inbound hot path: store one message of a known sender.

``store()`` finds the sender's lead and conversation on the number, inserts the message and its
provider id into ``message_keys`` (whose primary key, (account, provider message id), stops a
retried delivery: see ``MessageKey``), bumps the
conversation and takes the lead out of the trash if they wrote again, all only when the message
is new. On PostgreSQL that is one statement, one round trip (data-modifying CTEs); elsewhere it is
the same steps as separate statements. Both are built once per process. When the sender isn't
known yet (no lead, or no conversation on this number), nothing is written and the caller runs
the full upsert, then calls ``store()`` again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Table, bindparam, case, delete, insert, select, update

from crm.db import insert_ignoring_conflicts
from crm.inbox.models import Conversation, Message, MessageKey
from crm.leads.models import Lead


@dataclass(frozen=True)
class Stored:
    lead_id: int
    lead_bsuid: str | None
    lead_name: str
    conversation_id: int
    assignee_id: int | None
    message_id: int | None  # None: already stored (a retried delivery)
    ai_enabled: bool = False  # the conversation's bot switch


@dataclass(frozen=True)
class NewMessage:
    workspace_id: int
    account_id: int
    provider: str
    phone: str | None  # the sender is looked up by phone when there is one, else by bsuid
    bsuid: str | None
    direction: str
    type: str
    text: str
    provider_message_id: str
    reply_to: str | None
    media_id: str | None
    payload: dict[str, Any] | None
    error_code: str | None
    error_title: str | None
    created_at: datetime

    @property
    def incoming(self) -> bool:
        return self.direction == "in"

    def message_row(self) -> dict[str, Any]:
        return {
            "workspace_id": self.workspace_id,
            "account_id": self.account_id,
            "direction": self.direction,
            "type": self.type,
            "text": self.text,
            "status": "received" if self.incoming else "sent",
            "provider": self.provider,
            "provider_message_id": self.provider_message_id,
            "author": "lead" if self.incoming else "agent",
            "author_user_id": None,
            "reply_to": self.reply_to,
            "media_id": self.media_id,
            "payload": self.payload,
            "error_code": self.error_code,
            "error_title": self.error_title,
            "created_at": self.created_at,
        }


class Store(Protocol):
    def __call__(self, connection: Connection, new: NewMessage) -> Stored | None: ...


def _tables() -> tuple[Table, Table, Table, Table]:
    return (
        cast(Table, Lead.__table__),
        cast(Table, Conversation.__table__),
        cast(Table, Message.__table__),
        cast(Table, MessageKey.__table__),
    )


class StepByStep:
    """Any database: a SELECT, then INSERTs, UPDATE(s) when the message is new (the message first,
    then its key; a key already there means a retried delivery, and the message goes again)."""

    def __init__(self) -> None:
        leads, conversations, messages, keys = _tables()
        known = select(
            leads.c.id,
            leads.c.bsuid,
            leads.c.name,
            leads.c.deleted_at,
            conversations.c.id.label("conversation_id"),
            conversations.c.assignee_id,
            conversations.c.ai_enabled,
        ).select_from(
            leads.join(
                conversations,
                (conversations.c.lead_id == leads.c.id)
                & (conversations.c.account_id == bindparam("account_id")),
            )
        )
        in_workspace = leads.c.workspace_id == bindparam("workspace_id")
        self.known_by_phone = known.where(in_workspace, leads.c.phone == bindparam("phone"))
        self.known_by_bsuid = known.where(in_workspace, leads.c.bsuid == bindparam("bsuid"))
        self.insert_message = insert(messages).returning(messages.c.id)
        self.insert_key = insert_ignoring_conflicts(keys).returning(keys.c.message_id)
        self.delete_message = delete(messages).where(messages.c.id == bindparam("message_id"))
        at = bindparam("at", type_=Conversation.last_message_at.type)
        bump = update(conversations).where(conversations.c.id == bindparam("conversation_id"))
        forward = {
            "status": "open",
            # Only ever forward: a late delivery of an old message doesn't reorder the inbox.
            "last_message_at": case(
                (conversations.c.last_message_at < at, at), else_=conversations.c.last_message_at
            ),
        }
        self.bump_inbound = bump.values(unread_count=conversations.c.unread_count + 1, **forward)
        # The business answered from its own phone: a person is on it, so the bot steps back.
        self.bump_outbound = bump.values(ai_enabled=False, **forward)
        self.restore_lead = update(leads).where(leads.c.id == bindparam("lead_id")).values(deleted_at=None)

    def __call__(self, connection: Connection, new: NewMessage) -> Stored | None:
        who = {"account_id": new.account_id, "workspace_id": new.workspace_id}
        if new.phone:
            row = connection.execute(self.known_by_phone, {**who, "phone": new.phone}).first()
        else:
            row = connection.execute(self.known_by_bsuid, {**who, "bsuid": new.bsuid}).first()
        if row is None:
            return None
        message_id = connection.execute(
            self.insert_message, {**new.message_row(), "conversation_id": row.conversation_id}
        ).scalar_one()
        key = {
            "account_id": new.account_id,
            "provider_message_id": new.provider_message_id,
            "message_id": message_id,
            "created_at": new.created_at,
        }
        if connection.execute(self.insert_key, key).scalar() is None:
            connection.execute(self.delete_message, {"message_id": message_id})
            message_id = None
        else:
            if row.deleted_at is not None:  # they wrote to us again: the lead is back
                connection.execute(self.restore_lead, {"lead_id": row.id})
            connection.execute(
                self.bump_inbound if new.incoming else self.bump_outbound,
                {"conversation_id": row.conversation_id, "at": new.created_at},
            )
        return Stored(
            row.id,
            row.bsuid,
            row.name,
            row.conversation_id,
            row.assignee_id,
            message_id,
            bool(row.ai_enabled),
        )


_PG_STORE = """
WITH known AS (
    SELECT l.id AS lead_id, l.bsuid, l.name, l.deleted_at, c.id AS conversation_id, c.assignee_id,
           c.ai_enabled
    FROM leads AS l JOIN conversations AS c ON c.lead_id = l.id AND c.account_id = %(account_id)s
    WHERE l.workspace_id = %(workspace_id)s AND SENDER
), claimed AS (
    INSERT INTO message_keys (account_id, provider_message_id, message_id, created_at)
    SELECT %(account_id)s, %(provider_message_id)s, nextval('messages_id_seq'), %(created_at)s
    FROM known
    ON CONFLICT DO NOTHING
    RETURNING message_id
), stored AS (
    INSERT INTO messages (id, workspace_id, account_id, direction, type, text, status, provider,
                          provider_message_id, author, author_user_id, reply_to, media_id, payload,
                          error_code, error_title, created_at, conversation_id)
    SELECT claimed.message_id, %(workspace_id)s, %(account_id)s, %(direction)s, %(type)s, %(text)s,
           %(status)s, %(provider)s, %(provider_message_id)s, %(author)s, NULL, %(reply_to)s, %(media_id)s,
           %(payload)s::json, %(error_code)s, %(error_title)s, %(created_at)s, known.conversation_id
    FROM known, claimed
    RETURNING id, conversation_id
), bumped AS (
    UPDATE conversations AS c
    SET status = 'open',
        last_message_at = CASE WHEN c.last_message_at < %(created_at)s THEN %(created_at)s
                               ELSE c.last_message_at END,
        unread_count = c.unread_count + CASE WHEN %(incoming)s THEN 1 ELSE 0 END,
        ai_enabled = %(incoming)s AND c.ai_enabled
    FROM stored WHERE c.id = stored.conversation_id
), restored AS (
    UPDATE leads SET deleted_at = NULL
    FROM known, stored WHERE leads.id = known.lead_id AND known.deleted_at IS NOT NULL
)
SELECT known.lead_id, known.bsuid, known.name, known.conversation_id, known.assignee_id,
       stored.id AS message_id, known.ai_enabled
FROM known LEFT JOIN stored ON true
"""


class PostgresOneTrip:
    """PostgreSQL: the same steps as ``StepByStep`` in one statement (the hot path's CPU is mostly
    per-statement overhead in the driver and SQLAlchemy, and each statement is a round trip)."""

    by_phone = _PG_STORE.replace("SENDER", "l.phone = %(phone)s")
    by_bsuid = _PG_STORE.replace("SENDER", "l.bsuid = %(bsuid)s")

    def __call__(self, connection: Connection, new: NewMessage) -> Stored | None:
        params = new.message_row()
        params.update(
            phone=new.phone,
            bsuid=new.bsuid,
            incoming=new.incoming,
            payload=json.dumps(new.payload) if new.payload is not None else None,
        )
        row = connection.exec_driver_sql(self.by_phone if new.phone else self.by_bsuid, params).first()
        if row is None:
            return None
        return Stored(
            row.lead_id,
            row.bsuid,
            row.name,
            row.conversation_id,
            row.assignee_id,
            row.message_id,
            bool(row.ai_enabled),
        )


_stores: dict[str, Store] = {}


def store_for(connection: Connection) -> Store:
    dialect = connection.dialect.name
    found = _stores.get(dialect)
    if found is None:
        found = _stores[dialect] = PostgresOneTrip() if dialect == "postgresql" else StepByStep()
    return found
