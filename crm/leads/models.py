"""Leads: the people a workspace talks to, with their consent."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.db import UTCDateTime, utcnow
from crm.extensions import Model


class Lead(Model):
    __tablename__ = "leads"
    __table_args__ = (
        # One lead per phone per workspace; NULL phones (business-scoped ids only) don't collide.
        UniqueConstraint("workspace_id", "phone"),
        # The indexes below cover only the rows they are for (most leads have no business-scoped
        # id, have not opted in, are not in the trash): every lead written, by an import of a
        # million or by a webhook, updates fewer indexes.
        Index(
            "uq_leads_workspace_id_bsuid",
            "workspace_id",
            "bsuid",
            unique=True,
            postgresql_where=text("bsuid IS NOT NULL"),
            sqlite_where=text("bsuid IS NOT NULL"),
        ),
        Index(
            "ix_leads_workspace_id_opt_in",
            "workspace_id",
            "opt_in",
            postgresql_where=text("opt_in"),
            sqlite_where=text("opt_in"),
        ),
        # Unique so that tag rows can refer to a lead by it: (workspace_id, id) together.
        Index("uq_leads_workspace_id_id", "workspace_id", "id", unique=True),
        Index("ix_leads_workspace_id_name_id", "workspace_id", "name", "id"),
        Index(
            "ix_leads_workspace_id_deleted_at",
            "workspace_id",
            "deleted_at",
            postgresql_where=text("deleted_at IS NOT NULL"),
            sqlite_where=text("deleted_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # On PostgreSQL this key and the tags' below are triggers that check a statement's rows at once
    # (migration 0023, crm.db.DATABASE_CHECKED_KEYS): an import writes a million.
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    phone: Mapped[str | None] = mapped_column(String(32))  # E.164
    bsuid: Mapped[str | None] = mapped_column(String(128))  # WhatsApp business-scoped user id
    # "person", or "group": a WhatsApp group a WebQR number is in, whose conversation is the
    # group chat (its bsuid is the group's JID). Groups never appear among the leads.
    kind: Mapped[str] = mapped_column(String(8), default="person", server_default="person")
    name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(254))
    notes: Mapped[str] = mapped_column(Text, default="")
    # Where the lead came from (LeadSource): typed in, imported, the API, or they wrote first.
    source: Mapped[str] = mapped_column(String(16), default="manual", server_default="manual")
    # The workspace's own fields ("company", "plan"): text values by field name.
    custom_fields: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    opt_in: Mapped[bool] = mapped_column(Boolean, default=False)
    opted_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    opted_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    tags: Mapped[list[LeadTag]] = relationship(
        back_populates="lead", cascade="all, delete-orphan", order_by="LeadTag.name"
    )

    @property
    def tag_names(self) -> list[str]:
        return [t.name for t in self.tags]

    @property
    def is_group(self) -> bool:
        return self.kind == "group"


class LeadSource(StrEnum):
    MANUAL = "manual"
    IMPORT = "import"
    API = "api"
    INBOUND = "inbound"


class ConsentSource(StrEnum):
    FORM = "form"  # someone of the team, in the app
    IMPORT = "import"
    KEYWORD = "keyword"  # the lead wrote SAIR, STOP, VOLTAR...
    API = "api"
    MERGE = "merge"  # two leads merged: the kept one took the other's consent


class ConsentEvent(Model):
    """One change of a lead's consent: who or what changed it, when and how (the history shown on
    the lead's page). The lead's ``opt_in``/``opted_out_at`` are the current state."""

    __tablename__ = "consent_events"
    __table_args__ = (Index("ix_consent_events_lead_id_id", "lead_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    opted_in: Mapped[bool] = mapped_column(Boolean)  # False: an opt-out
    source: Mapped[str] = mapped_column(String(16))  # ConsentSource
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    detail: Mapped[str] = mapped_column(String(200), default="")  # the keyword, the file, ...
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LeadImport(Model):
    """A CSV import: the stored file, how its columns map, and its progress.

    ``processed_rows`` is the checkpoint: each batch of rows is merged and counted in one
    transaction (per part, on PostgreSQL: ``parts_merged``), so a crash resumes after the last
    committed batch (or part) and never half-merges one.
    """

    __tablename__ = "lead_imports"
    __table_args__ = (Index("ix_lead_imports_workspace_id_id", "workspace_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # draft (uploaded, columns not confirmed yet) | queued | running | done | failed
    status: Mapped[str] = mapped_column(String(16), default="queued")
    filename: Mapped[str] = mapped_column(String(255), default="")
    storage_key: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer, default=0)
    encoding: Mapped[str] = mapped_column(String(16), default="utf-8")
    delimiter: Mapped[str] = mapped_column(String(1), default=",")
    # {"phone": 0, "name": 1, "email": null, "tags": 3, "custom": {"company": 4}}: column indexes
    mapping: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    on_duplicate: Mapped[str] = mapped_column(String(8), default="skip")  # skip | update
    tags: Mapped[list[str] | None] = mapped_column(JSON)
    opt_in: Mapped[bool] = mapped_column(Boolean, default=False)
    default_country: Mapped[str] = mapped_column(String(2), default="BR")
    total_rows: Mapped[int | None] = mapped_column(Integer)
    processed_rows: Mapped[int] = mapped_column(Integer, default=0)
    # Bit n set: part n of the batch at the checkpoint is committed (PostgreSQL merges a batch's
    # leads as parts, at once, on separate connections), that batch being ``parts_rows`` records
    # cut in ``parts_count`` parts (a resumed run cuts it the same way); when the last part
    # commits, the checkpoint moves past the batch and all three are 0 again.
    parts_merged: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    parts_rows: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    parts_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    errors_count: Mapped[int] = mapped_column(Integer, default=0)
    failure: Mapped[str | None] = mapped_column(String(500))  # why a failed import could not run
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A running import's lease (renewed by every batch); for a queued one, when it was queued.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Runs started (a crash or a lost queue starts another); past a few, the import fails.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The language of whoever started it: the report's reasons are written in it.
    locale: Mapped[str | None] = mapped_column(String(10))
    # The file's header cells and first rows, for the mapping page (the file may be on S3).
    header: Mapped[list[str] | None] = mapped_column(JSON)
    preview: Mapped[list[list[str]] | None] = mapped_column(JSON)


class LeadImportError(Model):
    """A bad row of an import: its line in the file (header = 1), why, and the row as written."""

    __tablename__ = "lead_import_errors"
    __table_args__ = (UniqueConstraint("import_id", "line"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    import_id: Mapped[int] = mapped_column(ForeignKey("lead_imports.id", ondelete="CASCADE"))
    line: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(200))
    raw: Mapped[str] = mapped_column(Text, default="")


class LeadTag(Model):
    """A tag on a lead. ``key`` is the case-folded name: tags match case-insensitively."""

    __tablename__ = "lead_tags"
    __table_args__ = (
        # Unique as (lead_id, key) is (a lead has one workspace); with workspace_id second,
        # lookups by the foreign key's two columns use it, on SQLite too (no statistics there).
        UniqueConstraint("lead_id", "workspace_id", "key"),
        Index("ix_lead_tags_workspace_id_key", "workspace_id", "key"),
        # One key for the lead and its workspace: a tag can't sit in another workspace than its
        # lead, the workspace's cascade reaches tags through the leads, and each tag written
        # fires one check instead of two (a large import writes hundreds of thousands).
        ForeignKeyConstraint(
            ["workspace_id", "lead_id"], ["leads.workspace_id", "leads.id"], ondelete="CASCADE"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(Integer)
    lead_id: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(64))

    lead: Mapped[Lead] = relationship(back_populates="tags")
