"""Conversations (one per lead per number) and their messages."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.db import UTCDateTime, utcnow
from crm.extensions import Model

if TYPE_CHECKING:  # imported for real by the app: a module-level import here would be a cycle
    from crm.leads.models import Lead
    from crm.media.models import MediaFile


class Conversation(Model):
    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("account_id", "lead_id"),
        Index("ix_conversations_workspace_id_last_message_at", "workspace_id", "last_message_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("whatsapp_accounts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="open")
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    unread_count: Mapped[int] = mapped_column(Integer, default=0)
    ai_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    lead: Mapped[Lead] = relationship()


class Message(Model):
    """One message of a conversation.

    On PostgreSQL the table is partitioned by month of ``created_at`` (migration 0017,
    ``crm.ops.partitions``): its primary key there is (id, created_at), and a unique index can't
    span the partitions, so the uniqueness of provider message ids lives in ``message_keys``.
    Nothing references a message by foreign key (a key would need created_at too): the outbox
    and broadcast recipients hold plain ids, and whoever deletes messages deletes their rows
    (``crm.inbox.keys.forget_messages``). SQLite keeps a plain table with the same columns.
    The function ``messages_before`` (migration 0025) returns the table's rows: a migration that
    replaces the table must drop it first and create it again after.
    """

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("whatsapp_accounts.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(String(3))  # "in" | "out"
    type: Mapped[str] = mapped_column(String(24), default="text")
    text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="received")
    provider: Mapped[str] = mapped_column(String(16))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    author: Mapped[str] = mapped_column(String(16))  # lead | agent | ai | fallback | broadcast | api
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # What the provider needs beyond text: template name and parameters, media link or id, ...
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reply_to: Mapped[str | None] = mapped_column(String(128))  # provider id of the message answered
    media_id: Mapped[str | None] = mapped_column(String(128))  # the provider's media id (inbound)
    media_file_id: Mapped[int | None] = mapped_column(ForeignKey("media_files.id", ondelete="SET NULL"))
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_title: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    media_file: Mapped[MediaFile | None] = relationship()


class MessageKey(Model):
    """A provider message id, stored once per number: duplicate webhook deliveries are stopped by
    this primary key, by the database, never by a check-then-insert. The message is found by
    (message_id, created_at), which names its partition on PostgreSQL."""

    __tablename__ = "message_keys"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("whatsapp_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    provider_message_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    message_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# The thread view reads a conversation's messages newest first, keyset-paginated on (created_at, id).
Index(
    "ix_messages_conversation_id_created_at_id",
    Message.conversation_id,
    Message.created_at.desc(),
    Message.id.desc(),
)
# Which messages carry a file (cleanup and orphan sweeps); most messages carry none.
Index(
    "ix_messages_media_file_id",
    Message.media_file_id,
    postgresql_where=Message.media_file_id.isnot(None),
    sqlite_where=Message.media_file_id.isnot(None),
)


class ConversationNote(Model):
    """A note for the team inside a conversation: never sent to the customer."""

    __tablename__ = "conversation_notes"
    __table_args__ = (
        Index("ix_conversation_notes_conversation_id_created_at", "conversation_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CannedResponse(Model):
    """A saved reply agents insert by typing ``/shortcut`` in the composer."""

    __tablename__ = "canned_responses"
    __table_args__ = (UniqueConstraint("workspace_id", "shortcut"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    shortcut: Mapped[str] = mapped_column(String(32))  # lower-case letters, digits, - and _
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
