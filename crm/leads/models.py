"""Leads: the people a workspace talks to, with their consent."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.db import UTCDateTime, utcnow
from crm.extensions import Model


class Lead(Model):
    __tablename__ = "leads"
    __table_args__ = (
        # One lead per phone per workspace; NULL phones (business-scoped ids only) don't collide.
        UniqueConstraint("workspace_id", "phone"),
        UniqueConstraint("workspace_id", "bsuid"),
        Index("ix_leads_workspace_id_opt_in", "workspace_id", "opt_in"),
        Index("ix_leads_workspace_id_id", "workspace_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    phone: Mapped[str | None] = mapped_column(String(32))  # E.164
    bsuid: Mapped[str | None] = mapped_column(String(128))  # WhatsApp business-scoped user id
    # "person", or "group": a WhatsApp group a WebQR number is in, whose conversation is the
    # group chat (its bsuid is the group's JID). Groups never appear among the leads.
    kind: Mapped[str] = mapped_column(String(8), default="person", server_default="person")
    name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(254))
    notes: Mapped[str] = mapped_column(Text, default="")
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


class LeadTag(Model):
    """A tag on a lead. ``key`` is the case-folded name: tags match case-insensitively."""

    __tablename__ = "lead_tags"
    __table_args__ = (
        UniqueConstraint("lead_id", "key"),
        Index("ix_lead_tags_workspace_id_key", "workspace_id", "key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(64))

    lead: Mapped[Lead] = relationship(back_populates="tags")
