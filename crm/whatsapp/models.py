"""WhatsApp numbers (accounts), the outbox of messages to send, and statuses waiting for their message."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, true
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import UTCDateTime, utcnow
from crm.extensions import Model


class Provider(enum.StrEnum):
    SANDBOX = "sandbox"
    CLOUD = "cloud"
    WEBQR = "webqr"


class Health(enum.StrEnum):
    """What provider signals say about a number. Only connected and degraded numbers send."""

    CONNECTED = "connected"
    DEGRADED = "degraded"  # sending, but warned: low quality, throttled, flagged
    LOGGED_OUT = "logged_out"  # needs a person: token expired, session ended, QR needed
    BLOCKED = "blocked"  # the provider stopped this number (policy, spam, ban)

    @property
    def can_send(self) -> bool:
        return self in (Health.CONNECTED, Health.DEGRADED)


class WhatsAppAccount(Model):
    __tablename__ = "whatsapp_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(120))
    phone: Mapped[str | None] = mapped_column(String(32))  # E.164 once known
    # active: in use; disabled: switched off by an admin (never routed to).
    status: Mapped[str] = mapped_column(String(24), default="active")
    health: Mapped[str] = mapped_column(String(24), default=Health.CONNECTED.value)
    health_reason: Mapped[str | None] = mapped_column(Text)
    health_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Sends wait until then after the provider asked us to slow down (e.g. Cloud API 130429).
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Non-secret provider settings (phone_number_id, waba_id, graph_url, ...).
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Access tokens, app secrets, session keys: encrypted at rest, never rendered back.
    secrets_encrypted: Mapped[str | None] = mapped_column(Text)
    # Random path segment of the Cloud API webhook URL (unguessable, unique).
    webhook_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    max_per_minute: Mapped[int | None] = mapped_column(Integer)
    # AI replies on this number (when the workspace has them on).
    ai_enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Routing: lower priority first; weight splits new leads among numbers of equal priority
    # (gradual migration); the fallback carries messages while this number can't send.
    priority: Mapped[int] = mapped_column(Integer, default=0)
    weight: Mapped[int] = mapped_column(Integer, default=100)
    fallback_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("whatsapp_accounts.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def health_enum(self) -> Health:
        return Health(self.health)

    @property
    def is_usable(self) -> bool:
        return self.status == "active" and self.health_enum.can_send


class OutboxState(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Outbox(Model):
    """One message to send. Written in the same transaction as its cause; PostgreSQL is the truth.

    ``deliver_outbound`` claims a row (queued → sending, with a lease), calls the provider and
    records the result. A reconciler re-enqueues queued rows whose job was lost and requeues
    rows whose lease ran out.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        # The same idempotency key twice in a workspace is the same send.
        UniqueConstraint("workspace_id", "idempotency_key"),
        Index("ix_outbox_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    # No foreign key: messages are partitioned on PostgreSQL (see Message); whoever deletes a
    # message deletes its outbox row (crm.inbox.keys.forget_messages).
    message_id: Mapped[int] = mapped_column(Integer, unique=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))  # what the key was first used for
    state: Mapped[str] = mapped_column(String(16), default=OutboxState.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ParkedStatus(Model):
    """A status that arrived before we knew its message id; applied when the message appears."""

    __tablename__ = "parked_statuses"
    __table_args__ = (UniqueConstraint("account_id", "provider_message_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("whatsapp_accounts.id", ondelete="CASCADE"))
    provider_message_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_title: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AccountEvent(Model):
    """The health history of a number: what the provider said and what we did about it."""

    __tablename__ = "account_events"
    __table_args__ = (Index("ix_account_events_account_id_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("whatsapp_accounts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    health: Mapped[str | None] = mapped_column(String(24))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebQRState(enum.StrEnum):
    IDLE = "idle"  # nothing running (never connected, or disconnected by a person)
    STARTING = "starting"
    WAITING_FOR_SCAN = "waiting_for_scan"  # QR codes are being shown
    QR_EXPIRED = "qr_expired"  # the codes ran out: offer "new QR"
    PAIRED = "paired"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # dropped; the gateway reconnects with backoff
    LOGGED_OUT = "logged_out"  # the phone removed this device: a new scan is needed
    BANNED = "banned"  # temporary ban from WhatsApp


class WebQRSession(Model):
    """The control channel between the web process and the gateway for one WebQR number.

    People set ``desired`` (connect, disconnect, logout, new pairing); the gateway, the only owner
    of WhatsApp Web sessions, acts on it and reports ``state``, the current QR code and heartbeats.
    """

    __tablename__ = "webqr_sessions"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("whatsapp_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    desired: Mapped[str] = mapped_column(String(16), default="stopped")  # running | stopped | logout
    generation: Mapped[int] = mapped_column(Integer, default=0)  # bumped by "new QR": restart the session
    pair_phone: Mapped[str | None] = mapped_column(String(32))  # pairing by phone code instead of QR
    state: Mapped[str] = mapped_column(String(24), default=WebQRState.IDLE.value)
    state_detail: Mapped[str | None] = mapped_column(Text)
    qr_code: Mapped[str | None] = mapped_column(Text)
    qr_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    qr_count: Mapped[int] = mapped_column(Integer, default=0)
    pair_code: Mapped[str | None] = mapped_column(String(16))
    jid: Mapped[str | None] = mapped_column(String(128))
    owner: Mapped[str | None] = mapped_column(String(128))  # which gateway process runs it
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    paired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class WhatsAppGroup(Model):
    """A WhatsApp group a WebQR number has joined (synced by the gateway)."""

    __tablename__ = "whatsapp_groups"
    __table_args__ = (UniqueConstraint("account_id", "jid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("whatsapp_accounts.id", ondelete="CASCADE"))
    jid: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200), default="")
    participants: Mapped[int] = mapped_column(Integer, default=0)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MessageTemplate(Model):
    """A Cloud API message template of a number's WhatsApp Business Account, as last synced."""

    __tablename__ = "message_templates"
    __table_args__ = (UniqueConstraint("account_id", "name", "language"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("whatsapp_accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(512))
    language: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(32), default="")
    status: Mapped[str] = mapped_column(String(32), default="")  # APPROVED, PENDING, REJECTED, PAUSED…
    parameter_format: Mapped[str] = mapped_column(String(16), default="POSITIONAL")
    components: Mapped[list[Any]] = mapped_column(JSON, default=list)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
