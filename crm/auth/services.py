"""People and sessions: first admin, login with throttling, server-side sessions, passwords."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import Select, bindparam, delete, func, select, update
from sqlalchemy.orm import contains_eager

from crm.auth.models import LoginFailure, Membership, Role, User, UserSession, Workspace
from crm.auth.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    burn_verify_time,
    hash_password,
    new_token,
    token_digest,
    verify_password,
)
from crm.db import utcnow
from crm.errors import DomainError, NotFound, TooManyRequests, ValidationFailed
from crm.extensions import db


class InvalidCredentials(DomainError):
    status = 401
    code = "invalid_credentials"

    def default_message(self) -> str:
        return _("Wrong email or password.")


# --- validation shared by the CLI, the setup page and invitations ----------------------------


def normalise_email(email: str) -> str:
    try:
        return validate_email(
            email.strip(), check_deliverability=False, globally_deliverable=False
        ).normalized.lower()
    except EmailNotValidError as exc:
        raise ValidationFailed(_("Enter a valid email address."), code="invalid_email") from exc


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            _("The password must have at least %(n)d characters.", n=MIN_PASSWORD_LENGTH),
            code="weak_password",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationFailed(_("The password is too long."), code="weak_password")


def check_country(country: str) -> str:
    country = country.strip().upper()
    if country not in phonenumbers.SUPPORTED_REGIONS:
        raise ValidationFailed(_("Unknown country code: %(c)s", c=country), code="invalid_country")
    return country


def check_timezone(name: str) -> str:
    name = name.strip()
    if name not in zoneinfo.available_timezones():
        raise ValidationFailed(_("Unknown time zone: %(tz)s", tz=name), code="invalid_timezone")
    return name


def check_workspace_name(name: str) -> str:
    name = " ".join(name.split())
    if not name or len(name) > 120:
        raise ValidationFailed(_("Give the workspace a name of up to 120 characters."), code="invalid_name")
    return name


# --- first admin / workspaces ------------------------------------------------------------------


def has_any_user() -> bool:
    return db.session.scalar(select(func.count()).select_from(User)) != 0


@dataclass(frozen=True)
class AdminCreated:
    workspace_id: int
    user_id: int


def create_admin(
    workspace_name: str,
    email: str,
    password: str,
    *,
    country: str = "BR",
    timezone: str = "America/Sao_Paulo",
    name: str = "",
    locale: str | None = None,
) -> AdminCreated:
    """Create the workspace if needed and make this person its owner.

    An existing person keeps their password: this never silently resets someone's credentials.
    Everything is validated before anything is written, so bad input changes nothing.
    """
    workspace_name = check_workspace_name(workspace_name)
    email = normalise_email(email)
    check_password_rules(password)
    country = check_country(country)
    timezone = check_timezone(timezone)

    workspace = db.session.scalar(select(Workspace).where(Workspace.name == workspace_name))
    if workspace is None:
        workspace = Workspace(name=workspace_name, country=country, timezone=timezone)
        if locale:
            workspace.locale = locale
        db.session.add(workspace)
    user = db.session.scalar(select(User).where(User.email == email))
    if user is None:
        user = User(email=email, name=name.strip(), password_hash=hash_password(password), locale=locale)
        db.session.add(user)
    db.session.flush()
    membership = db.session.scalar(
        select(Membership).where(Membership.workspace_id == workspace.id, Membership.user_id == user.id)
    )
    if membership is None:
        db.session.add(Membership(workspace_id=workspace.id, user_id=user.id, role=Role.OWNER.value))
    else:
        membership.role = Role.OWNER.value
        membership.disabled_at = None
    db.session.commit()
    return AdminCreated(workspace.id, user.id)


def workspace_by_name(name: str) -> Workspace:
    workspace = db.session.scalar(select(Workspace).where(Workspace.name == " ".join(name.split())))
    if workspace is None:
        raise ValidationFailed(_("Unknown workspace: %(name)s", name=name), code="unknown_workspace")
    return workspace


def active_memberships(user_id: int) -> list[Membership]:
    return list(
        db.session.scalars(
            select(Membership)
            .join(Workspace)
            .where(Membership.user_id == user_id, Membership.disabled_at.is_(None))
            .order_by(Workspace.name)
        )
    )


# --- login throttling ---------------------------------------------------------------------------


def _failure_count(key: str) -> int:
    since = utcnow() - timedelta(seconds=current_app.config["LOGIN_FAILURE_WINDOW_SECONDS"])
    return (
        db.session.scalar(
            select(func.count())
            .select_from(LoginFailure)
            .where(LoginFailure.key == key, LoginFailure.created_at >= since)
        )
        or 0
    )


def _throttle_keys(email: str, ip: str | None) -> list[tuple[str, int]]:
    cfg = current_app.config
    keys = [(f"account:{email.strip().lower()}", cfg["LOGIN_MAX_FAILURES_PER_ACCOUNT"])]
    if ip:
        keys.append((f"ip:{ip}", cfg["LOGIN_MAX_FAILURES_PER_IP"]))
    return keys


def authenticate(email: str, password: str, ip: str | None) -> tuple[User, Membership]:
    """Check a login. Throttled per account and per IP *before* any hashing (no CPU for attackers).

    Every failure is recorded (and committed) so the counts hold across processes.
    """
    keys = _throttle_keys(email, ip)
    if any(_failure_count(key) >= limit for key, limit in keys):
        raise TooManyRequests()
    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        burn_verify_time(password)
    if user is None or not verify_password(user.password_hash, password):
        for key, _limit in keys:
            db.session.add(LoginFailure(key=key))
        db.session.commit()
        raise InvalidCredentials()
    memberships = active_memberships(user.id)
    if not memberships:
        raise DomainError(
            _("Your account is disabled. Ask a workspace admin."), code="account_disabled", status=403
        )
    db.session.execute(delete(LoginFailure).where(LoginFailure.key == keys[0][0]))
    return user, memberships[0]


# --- server-side sessions -----------------------------------------------------------------------


def start_session(user: User, workspace_id: int, ip: str | None, user_agent: str | None) -> str:
    """Open a new session row and return the raw token for the cookie (only its hash is kept)."""
    token = new_token()
    now = utcnow()
    db.session.add(
        UserSession(
            token_hash=token_digest(token),
            user_id=user.id,
            workspace_id=workspace_id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(hours=current_app.config["SESSION_LIFETIME_HOURS"]),
            ip_address=(ip or "")[:64] or None,
            user_agent=(user_agent or "")[:255] or None,
        )
    )
    user.last_login_at = now
    db.session.commit()
    return token


@dataclass(frozen=True)
class LiveSession:
    session: UserSession
    user: User
    membership: Membership


@cache
def _session_by_token() -> Select[tuple[UserSession, Membership]]:
    """One round trip on every request: the session with its person, membership and workspace (the
    page's language, zone and shell read them; they stay in the session's identity map). Built once:
    building it and its cache key took ~0.17 ms of CPU on every request."""
    return (
        select(UserSession, Membership)
        .outerjoin(
            Membership,
            (Membership.user_id == UserSession.user_id)
            & (Membership.workspace_id == UserSession.workspace_id),
        )
        .join(UserSession.user)
        .outerjoin(Membership.workspace)
        .options(contains_eager(UserSession.user), contains_eager(Membership.workspace))
        .where(UserSession.token_hash == bindparam("token_hash"))
    )


def load_session(token: str) -> LiveSession | None:
    """The live session for a cookie token, or None when it is unknown, revoked, expired or idle.

    An expired or idle session is revoked on the spot, so it can never come back.
    """
    found = db.session.execute(_session_by_token(), {"token_hash": token_digest(token)}).first()
    if found is None:
        return None
    row, membership = found
    if row.revoked_at is not None:
        return None
    now = utcnow()
    idle = timedelta(minutes=current_app.config["SESSION_IDLE_MINUTES"])
    if row.expires_at <= now or row.last_seen_at + idle <= now:
        revoke_sessions_where(UserSession.id == row.id, reason="expired")
        return None
    if membership is None or membership.is_disabled:
        revoke_sessions_where(UserSession.id == row.id, reason="disabled")
        return None
    if now - row.last_seen_at > timedelta(seconds=60):  # don't write on every request
        from crm.db import commit_without_waiting_for_disk

        row.last_seen_at = now
        commit_without_waiting_for_disk()  # a lost update only ends the session a minute early
    return LiveSession(row, row.user, membership)


def revoke_sessions_where(*criteria: object, reason: str) -> int:
    result = db.session.execute(
        update(UserSession)
        .where(UserSession.revoked_at.is_(None), *criteria)  # type: ignore[arg-type]
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )
    db.session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


def end_session(session_id: int) -> None:
    revoke_sessions_where(UserSession.id == session_id, reason="logout")


def user_sessions(user_id: int) -> list[UserSession]:
    return list(
        db.session.scalars(
            select(UserSession)
            .where(
                UserSession.user_id == user_id,
                UserSession.revoked_at.is_(None),
                UserSession.expires_at > utcnow(),
            )
            .order_by(UserSession.last_seen_at.desc())
        )
    )


def revoke_own_session(user_id: int, session_id: int) -> None:
    """End one of this person's own sessions; anyone else's id is NotFound."""
    owned = db.session.scalar(
        select(UserSession.id).where(UserSession.id == session_id, UserSession.user_id == user_id)
    )
    if owned is None:
        raise NotFound(f"session {session_id}")
    revoke_sessions_where(UserSession.id == session_id, reason="revoked")


def change_password(user: User, current: str, new: str, keep_session_id: int) -> None:
    """Change a password and end every *other* session of this person (the current one stays)."""
    if not verify_password(user.password_hash, current):
        raise ValidationFailed(_("The current password is wrong."), code="wrong_password")
    check_password_rules(new)
    user.password_hash = hash_password(new)
    user.password_changed_at = utcnow()
    db.session.flush()
    revoke_sessions_where(
        UserSession.user_id == user.id, UserSession.id != keep_session_id, reason="password_changed"
    )


def switch_workspace(session: UserSession, workspace_id: int) -> None:
    """Point this session at another workspace the person is an active member of (else NotFound)."""
    membership = db.session.scalar(
        select(Membership).where(
            Membership.user_id == session.user_id,
            Membership.workspace_id == workspace_id,
            Membership.disabled_at.is_(None),
        )
    )
    if membership is None:
        raise NotFound(f"workspace {workspace_id}")
    session.workspace_id = workspace_id
    db.session.commit()


def set_locale(user: User, locale: str | None) -> None:
    if locale not in (None, *current_app.config["LANGUAGES"]):
        raise ValidationFailed(_("Unknown language."), code="invalid_locale")
    user.locale = locale
    db.session.commit()


def purge_stale_auth_rows() -> int:
    """Delete long-dead sessions and old login failures (the periodic cleanup task)."""
    now = utcnow()
    a = db.session.execute(delete(UserSession).where(UserSession.expires_at < now - timedelta(days=30)))
    b = db.session.execute(delete(LoginFailure).where(LoginFailure.created_at < now - timedelta(days=1)))
    db.session.commit()
    return int(a.rowcount + b.rowcount)  # type: ignore[attr-defined]
