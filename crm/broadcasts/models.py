"""Broadcasts: one message to many opted-in leads (or WhatsApp groups), paced, exactly once.

A broadcast's recipients are written once, when it starts, in one set-based statement; each
recipient then moves ``pending`` → ``queued`` (its message is in the outbox, written in the same
transaction) or ``skipped`` (opted out, deleted, cancelled). What happened to a queued recipient
afterwards (sent, delivered, read, failed) is its message's status.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import UTCDateTime, utcnow
from crm.extensions import Model


class BroadcastStatus(enum.StrEnum):
    SCHEDULED = "scheduled"  # waiting for its time (or for the sending hours)
    RUNNING = "running"
    PAUSED = "paused"  # by a person, or automatically (a number blocked or logged out)
    DONE = "done"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (BroadcastStatus.DONE, BroadcastStatus.CANCELLED)


class RecipientState(enum.StrEnum):
    PENDING = "pending"  # not released yet
    QUEUED = "queued"  # its message is in the outbox (its status tells the rest)
    SKIPPED = "skipped"  # opted out, deleted, or still pending when the broadcast was cancelled


class SkipReason(enum.StrEnum):
    OPTED_OUT = "opted_out"
    DELETED = "deleted"
    CANCELLED = "cancelled"
    NO_NUMBER = "no_number"  # neither phone nor WhatsApp id to write to


class Broadcast(Model):
    __tablename__ = "broadcasts"
    __table_args__ = (Index("ix_broadcasts_workspace_id_id", "workspace_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=BroadcastStatus.SCHEDULED.value)
    # The message: texts (one picked at random per recipient, with {{variables}}), or a template.
    variants: Mapped[list[str]] = mapped_column(JSON, default=list)
    template_name: Mapped[str | None] = mapped_column(String(512))
    template_language: Mapped[str | None] = mapped_column(String(16))
    template_values: Mapped[dict[str, str] | None] = mapped_column(JSON)
    media_file_id: Mapped[int | None] = mapped_column(ForeignKey("media_files.id", ondelete="SET NULL"))
    # Who it goes to: {"tags": [...], "exclude_tags": [...], "exclude_contacted_days": n} or
    # {"groups": [group ids]}.
    audience: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Sending hours in the workspace's time zone (from "08:00" until "20:00"); outside them it waits.
    send_from: Mapped[str | None] = mapped_column(String(5))
    send_until: Mapped[str | None] = mapped_column(String(5))
    pause_reason: Mapped[str | None] = mapped_column(Text)
    recipients_count: Mapped[int] = mapped_column(Integer, default=0)
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The dispatcher's heartbeat: the next tick is due then; a tick long overdue means its job
    # was lost, and the reconciler starts another.
    next_tick_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def status_enum(self) -> BroadcastStatus:
        return BroadcastStatus(self.status)

    @property
    def is_template(self) -> bool:
        return bool(self.template_name)


class BroadcastAccount(Model):
    """A number a broadcast sends through."""

    __tablename__ = "broadcast_accounts"

    broadcast_id: Mapped[int] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[int] = mapped_column(
        ForeignKey("whatsapp_accounts.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))


class BroadcastRecipient(Model):
    __tablename__ = "broadcast_recipients"
    __table_args__ = (
        UniqueConstraint("broadcast_id", "lead_id"),
        Index("ix_broadcast_recipients_broadcast_id_id", "broadcast_id", "id"),  # the results table
        # A message is one recipient's; recipients not released yet have none (left out: a
        # hundred thousand NULLs to index when a broadcast is created).
        Index(
            "uq_broadcast_recipients_message_id",
            "message_id",
            unique=True,
            postgresql_where=text("message_id IS NOT NULL"),
            sqlite_where=text("message_id IS NOT NULL"),
        ),
        # The dispatcher's claim: the next pending recipients of a broadcast on a number.
        Index(
            "ix_broadcast_recipients_pending",
            "broadcast_id",
            "account_id",
            "id",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
    )

    # workspace_id, broadcast_id and account_id carry no foreign key: the recipients are written
    # in the same transaction as their broadcast, whose own keys hold the rest (its workspace; its
    # numbers in broadcast_accounts, and numbers are never deleted on their own), and broadcasts
    # are never deleted, only cancelled (deleting one would have to delete its recipients). Each
    # key is a trigger call per row: five of them made up 3 of the 4 s that writing 100,000
    # recipients took, the broadcast's alone 0.6-0.8 of the last 1.5-1.85 s (bench/broadcast.py).
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(Integer)
    broadcast_id: Mapped[int] = mapped_column(Integer)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=RecipientState.PENDING.value)
    skip_reason: Mapped[str | None] = mapped_column(String(16))
    message_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key: see Message
    variant: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
