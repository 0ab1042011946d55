"""What was archived, where, and in which state: enough to resume an interrupted run, to show a
lead's archived history and to restore it."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import UTCDateTime, utcnow
from crm.extensions import Model


class ArchiveState(enum.StrEnum):
    EXPORTING = "exporting"  # the file is being written; a run that died here is abandoned
    DELETING = "deleting"  # the file is stored and verified; its rows are being deleted
    DONE = "done"
    FAILED = "failed"  # the export or its verification failed: nothing was deleted
    SPENT = "spent"  # nothing in it is archived any more (restored, or its leads purged): file removed


class ConversationState(enum.StrEnum):
    EXPORTED = "exported"  # in the file, still in the database
    DELETING = "deleting"  # checked unchanged since the export; its rows are being deleted
    ARCHIVED = "archived"  # only in the file
    SKIPPED = "skipped"  # it changed after the export (a new message...): left in the database
    RESTORED = "restored"


class MessageArchive(Model):
    """One archive run of one workspace: one file in the media storage."""

    __tablename__ = "message_archives"
    __table_args__ = (Index("ix_message_archives_workspace_id_state", "workspace_id", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default=ArchiveState.EXPORTING.value)
    source: Mapped[str] = mapped_column(String(16))  # cli | schedule
    storage_key: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str | None] = mapped_column(String(64))  # of the stored (compressed) file
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # What the file holds (conversations skipped at deletion included: they are in it too).
    conversations: Mapped[int] = mapped_column(Integer, default=0)
    messages: Mapped[int] = mapped_column(Integer, default=0)
    notes: Mapped[int] = mapped_column(Integer, default=0)
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime())  # last message before this: archived
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ArchivedConversation(Model):
    """One conversation in an archive file: whose it was, how much and which period, and whether
    it is still only in the file."""

    __tablename__ = "archived_conversations"
    __table_args__ = (
        UniqueConstraint("archive_id", "conversation_id"),
        Index("ix_archived_conversations_lead_id_state", "lead_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    archive_id: Mapped[int] = mapped_column(ForeignKey("message_archives.id", ondelete="CASCADE"))
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    # A purged lead or a removed number takes its archived history with it (as it takes its
    # conversations); the file's lines are then never restored.
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("whatsapp_accounts.id", ondelete="CASCADE"))
    conversation_id: Mapped[int] = mapped_column(Integer)  # its id in the database, and in the file
    messages: Mapped[int] = mapped_column(Integer, default=0)
    notes: Mapped[int] = mapped_column(Integer, default=0)
    first_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16), default=ConversationState.EXPORTED.value)
    restored_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    restored_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class ArchivedMedia(Model):
    """A media file an archived message carries: kept in the storage (the orphan sweep skips it)
    so a restored message gets its file back."""

    __tablename__ = "archived_media"

    archived_conversation_id: Mapped[int] = mapped_column(
        ForeignKey("archived_conversations.id", ondelete="CASCADE"), primary_key=True
    )
    media_file_id: Mapped[int] = mapped_column(
        ForeignKey("media_files.id", ondelete="CASCADE"), primary_key=True, index=True
    )
