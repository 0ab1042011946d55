"""WhatsApp numbers (accounts) a workspace sends and receives through."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import UTCDateTime, utcnow
from crm.extensions import Model


class Provider(enum.StrEnum):
    SANDBOX = "sandbox"
    CLOUD = "cloud"
    WEBQR = "webqr"


class WhatsAppAccount(Model):
    __tablename__ = "whatsapp_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(120))
    phone: Mapped[str | None] = mapped_column(String(32))  # E.164 once known
    status: Mapped[str] = mapped_column(String(24), default="active")
    health: Mapped[str] = mapped_column(String(24), default="ok")
    health_reason: Mapped[str | None] = mapped_column(Text)
    # Non-secret provider settings (phone_number_id, waba_id, graph_url, ...).
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Access tokens, app secrets, session keys: encrypted at rest, never rendered back.
    secrets_encrypted: Mapped[str | None] = mapped_column(Text)
    # Random path segment of the Cloud API webhook URL (unguessable, unique).
    webhook_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    max_per_minute: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
