"""AI replies: a workspace's settings, one reply job per answered inbound message, the budget's
call log, the answer cache and the agents' drafts ("suggest reply")."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import UTCDateTime, utcnow
from crm.extensions import Model

MODES = ("always", "after_hours", "unassigned")
DEFAULT_MODEL = "gemini-2.5-flash"


class AISettings(Model):
    """One row per workspace that has opened its AI settings; no row means AI is off."""

    __tablename__ = "ai_settings"

    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    mode: Mapped[str] = mapped_column(String(16), default="always")
    model: Mapped[str] = mapped_column(String(80), default=DEFAULT_MODEL)
    instructions: Mapped[str] = mapped_column(Text, default="")
    knowledge: Mapped[str] = mapped_column(Text, default="")
    # None: the default text in the workspace's language.
    fallback: Mapped[str | None] = mapped_column(Text)
    handoff_keywords: Mapped[str | None] = mapped_column(Text)  # comma-separated; None: defaults
    handoff_message: Mapped[str | None] = mapped_column(Text)
    per_minute: Mapped[int] = mapped_column(Integer, default=10)
    per_day: Mapped[int] = mapped_column(Integer, default=500)
    history_messages: Mapped[int] = mapped_column(Integer, default=20)
    # Business hours for mode "after_hours", in the workspace's time zone: weekdays 0 (Monday)
    # to 6 as "0,1,2,3,4", and "HH:MM" times.
    hours_days: Mapped[str] = mapped_column(String(20), default="0,1,2,3,4")
    hours_start: Mapped[str] = mapped_column(String(5), default="08:00")
    hours_end: Mapped[str] = mapped_column(String(5), default="18:00")
    cache_hours: Mapped[int] = mapped_column(Integer, default=24)
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    # Bumped on every change: cached answers of older settings are never served.
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Gemini said the day's quota is spent: AI stays off until then (a banner says why).
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    pause_reason: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(String(32))  # a code, shown translated
    last_error_detail: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AIReply(Model):
    """The answer owed to one inbound message: created with the message, in the ingest
    transaction, so a lost queue job is found again; unique per message, so duplicate webhooks
    and retried tasks never answer twice."""

    __tablename__ = "ai_replies"
    __table_args__ = (
        Index("ix_ai_replies_status_due_at", "status", "due_at"),
        Index("ix_ai_replies_conversation_id", "conversation_id", "message_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    # The inbound message answered (no foreign key: messages get partitioned by month).
    message_id: Mapped[int] = mapped_column(Integer, unique=True)
    # pending → answering → answered | fallback | handoff | skipped | superseded
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # After this the customer gets the fallback instead of more retries.
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    reply_message_id: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(32))
    error_detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AICall(Model):
    """One request made to Gemini: the budget counts these over the last minute and the day."""

    __tablename__ = "ai_calls"
    __table_args__ = (Index("ix_ai_calls_workspace_id_at", "workspace_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    outcome: Mapped[str | None] = mapped_column(String(16))


class AICacheEntry(Model):
    """An answer to a question asked before, keyed by the settings' version and the question's
    normalised text."""

    __tablename__ = "ai_cache"
    __table_args__ = (UniqueConstraint("workspace_id", "key"), Index("ix_ai_cache_expires_at", "expires_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    reply: Mapped[str] = mapped_column(Text)
    hits: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AISuggestion(Model):
    """A draft asked for by an agent ("suggest reply"), written by the worker."""

    __tablename__ = "ai_suggestions"

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | ready | failed
    text: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
