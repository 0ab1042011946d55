"""A stored media file: what a message carries (inbound, downloaded; outbound, uploaded by an agent)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import UTCDateTime, utcnow
from crm.extensions import Model


class MediaStatus(enum.StrEnum):
    PENDING = "pending"  # inbound: to download; outbound: to prepare (compress, convert)
    WORKING = "working"  # a worker (or the WebQR gateway) has it
    READY = "ready"
    FAILED = "failed"  # error_code / error_title say why; a failed download can be retried


class MediaFile(Model):
    __tablename__ = "media_files"
    __table_args__ = (Index("ix_media_files_status_updated_at", "status", "updated_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("whatsapp_accounts.id", ondelete="SET NULL"))
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    kind: Mapped[str] = mapped_column(String(16))  # image | audio | video | document | sticker
    status: Mapped[str] = mapped_column(String(16), default=MediaStatus.PENDING.value)
    mime_type: Mapped[str] = mapped_column(String(128), default="application/octet-stream")
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    filename: Mapped[str | None] = mapped_column(String(255))  # shown to people, never a path
    storage_key: Mapped[str | None] = mapped_column(String(255))  # the file as sent or received
    original_key: Mapped[str | None] = mapped_column(String(255))  # an upload before preparing
    thumbnail_key: Mapped[str | None] = mapped_column(String(255))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    voice: Mapped[bool] = mapped_column(Boolean, default=False)
    # Inbound: the provider's media id (Cloud API) and, for WebQR, the encrypted media message
    # whose keys download and decrypt the file again (a retry).
    provider_media_id: Mapped[str | None] = mapped_column(String(128))
    # Outbound: the Cloud API media id this file got on each number, {"<account id>": {"id",
    # "at"}}: a broadcast with a photo uploads it once per number, not once per recipient.
    provider_uploads: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    source_encrypted: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_title: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def is_ready(self) -> bool:
        return self.status == MediaStatus.READY.value

    @property
    def inline_type(self) -> str:
        """How a browser may show it: only types that can't carry script are ever inline."""
        return _INLINE.get(self.mime_type.split(";")[0].strip().lower(), "")


_INLINE = {
    "image/jpeg": "image",
    "image/png": "image",
    "image/webp": "image",
    "image/gif": "image",
    "audio/ogg": "audio",
    "audio/mpeg": "audio",
    "audio/mp4": "audio",
    "audio/aac": "audio",
    "audio/wav": "audio",
    "video/mp4": "video",
    "video/3gpp": "video",
    "application/pdf": "",
}
