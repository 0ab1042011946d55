"""Workspaces, people, their memberships, browser sessions, API tokens and invitations."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.db import UTCDateTime, utcnow
from crm.extensions import Model


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    AGENT = "agent"

    @property
    def manages_team(self) -> bool:
        return self in (Role.OWNER, Role.ADMIN)


class Workspace(Model):
    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    # Default region for phone numbers typed without a country code (ISO 3166 alpha-2).
    country: Mapped[str] = mapped_column(String(2), default="BR")
    timezone: Mapped[str] = mapped_column(String(64), default="America/Sao_Paulo")
    locale: Mapped[str] = mapped_column(String(10), default="pt_BR")
    # New conversations go to the agents online in the inbox, in turn (round robin).
    auto_assign: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    auto_assign_last_user_id: Mapped[int | None] = mapped_column(Integer)  # whose turn it was last
    # Consent keywords, comma-separated; None means the defaults in PT, EN and ES.
    opt_out_keywords: Mapped[str | None] = mapped_column(Text)
    opt_in_keywords: Mapped[str | None] = mapped_column(Text)
    # What a lead who opted out or in by keyword is told; None means the default, in the
    # workspace's language.
    opt_out_reply: Mapped[str | None] = mapped_column(Text)
    opt_in_reply: Mapped[str | None] = mapped_column(Text)
    # Deleted leads stay in the trash this many days, then are purged with their conversations.
    trash_days: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
    # Conversations with no message for this many days are archived every night; None: never.
    archive_after_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class User(Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # stored lower-cased
    name: Mapped[str] = mapped_column(String(120), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    locale: Mapped[str | None] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    memberships: Mapped[list[Membership]] = relationship(back_populates="user")

    # Flask-Login protocol; the identity itself comes from the server-side session row.
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return True

    def get_id(self) -> str:
        return str(self.id)

    @property
    def display_name(self) -> str:
        return self.name or self.email


class Membership(Model):
    """A person's place in a workspace. Disabling it locks them out of that workspace."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("workspace_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16), default=Role.AGENT.value)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship(back_populates="memberships")
    workspace: Mapped[Workspace] = relationship()

    @property
    def role_enum(self) -> Role:
        return Role(self.role)

    @property
    def is_disabled(self) -> bool:
        return self.disabled_at is not None


class UserSession(Model):
    """A browser session. The cookie carries a random token; only its SHA-256 is stored.

    The row is the authority: revoking it ends the session at once, whatever the cookie says.
    """

    __tablename__ = "user_sessions"
    __table_args__ = (Index("ix_user_sessions_user_id_revoked_at", "user_id", "revoked_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The workspace this session is looking at (the switcher changes it).
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))

    user: Mapped[User] = relationship()


class ApiToken(Model):
    """A bearer token for /api/v1, bound to one workspace. Only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(80), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in settings so people can tell tokens apart
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()


class Invitation(Model):
    """A one-time link that lets someone join a workspace with a given role."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    workspace: Mapped[Workspace] = relationship()


class LoginFailure(Model):
    """Failed logins, counted per key (``account:<email>`` / ``ip:<addr>``) in a time window.

    Kept in the database so every web process sees the same counts, with or without Redis.
    """

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_created_at", "key", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
