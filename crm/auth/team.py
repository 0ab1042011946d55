"""The team of a workspace: members and roles, invitations, API tokens.

Rules: owners and admins manage the team; only an owner grants, changes or removes the owner
role; nobody disables or demotes themselves; a workspace always keeps an active owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import func, select, update

from crm.auth.models import ApiToken, Invitation, Membership, Role, User, UserSession
from crm.auth.passwords import hash_password, new_token, token_digest, verify_password
from crm.auth.services import check_password_rules, normalise_email, revoke_sessions_where
from crm.db import utcnow
from crm.errors import Conflict, Forbidden, NotFound, ValidationFailed
from crm.extensions import db
from crm.tenancy import get_scoped, scoped


def _require_manager(actor: Membership) -> None:
    if not actor.role_enum.manages_team:
        raise Forbidden()


def _parse_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError as exc:
        raise ValidationFailed(_("Unknown role."), code="invalid_role") from exc


def list_members(workspace_id: int) -> list[Membership]:
    return list(
        db.session.scalars(
            scoped(select(Membership), Membership, workspace_id).join(User).order_by(User.email)
        )
    )


def _active_owner_count(workspace_id: int) -> int:
    return (
        db.session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(
                Membership.workspace_id == workspace_id,
                Membership.role == Role.OWNER.value,
                Membership.disabled_at.is_(None),
            )
        )
        or 0
    )


def _check_can_touch(workspace_id: int, actor: Membership, member: Membership) -> None:
    _require_manager(actor)
    if member.id == actor.id:
        raise Forbidden(_("You cannot change your own role or access."))
    if member.role_enum is Role.OWNER and actor.role_enum is not Role.OWNER:
        raise Forbidden(_("Only an owner can change another owner."))


def change_role(workspace_id: int, actor: Membership, member_id: int, role: str) -> Membership:
    new_role = _parse_role(role)
    member = get_scoped(Membership, workspace_id, member_id)
    _check_can_touch(workspace_id, actor, member)
    if new_role is Role.OWNER and actor.role_enum is not Role.OWNER:
        raise Forbidden(_("Only an owner can make someone an owner."))
    member.role = new_role.value
    db.session.commit()
    return member


def set_member_disabled(workspace_id: int, actor: Membership, member_id: int, disabled: bool) -> Membership:
    """Disable (or re-enable) a member; disabling ends their sessions in this workspace at once."""
    member = get_scoped(Membership, workspace_id, member_id)
    _check_can_touch(workspace_id, actor, member)
    if disabled:
        member.disabled_at = member.disabled_at or utcnow()
        db.session.flush()
        revoke_sessions_where(
            UserSession.user_id == member.user_id, UserSession.workspace_id == workspace_id, reason="disabled"
        )
    else:
        member.disabled_at = None
    db.session.commit()
    return member


def end_member_sessions(workspace_id: int, actor: Membership, member_id: int) -> int:
    """Sign a member out everywhere in this workspace (their other workspaces are not ours to touch)."""
    member = get_scoped(Membership, workspace_id, member_id)
    _require_manager(actor)
    if member.role_enum is Role.OWNER and actor.role_enum is not Role.OWNER:
        raise Forbidden(_("Only an owner can change another owner."))
    return revoke_sessions_where(
        UserSession.user_id == member.user_id,
        UserSession.workspace_id == workspace_id,
        reason="ended_by_admin",
    )


# --- invitations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewInvitation:
    invitation: Invitation
    token: str  # shown once, as a link


def create_invitation(workspace_id: int, actor: Membership, email: str, role: str) -> NewInvitation:
    _require_manager(actor)
    email = normalise_email(email)
    new_role = _parse_role(role)
    if new_role is Role.OWNER and actor.role_enum is not Role.OWNER:
        raise Forbidden(_("Only an owner can make someone an owner."))
    already = db.session.scalar(
        select(Membership).join(User).where(Membership.workspace_id == workspace_id, User.email == email)
    )
    if already is not None:
        raise Conflict(_("%(email)s is already a member.", email=email), code="already_member")
    # A new link for the same person replaces any earlier one still pending.
    db.session.execute(
        update(Invitation)
        .where(
            Invitation.workspace_id == workspace_id,
            Invitation.email == email,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    token = new_token()
    invitation = Invitation(
        workspace_id=workspace_id,
        email=email,
        role=new_role.value,
        token_hash=token_digest(token),
        invited_by_id=actor.user_id,
        expires_at=utcnow() + timedelta(days=current_app.config["INVITATION_DAYS"]),
    )
    db.session.add(invitation)
    db.session.commit()
    return NewInvitation(invitation, token)


def pending_invitations(workspace_id: int) -> list[Invitation]:
    return list(
        db.session.scalars(
            scoped(select(Invitation), Invitation, workspace_id)
            .where(
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
                Invitation.expires_at > utcnow(),
            )
            .order_by(Invitation.created_at.desc())
        )
    )


def revoke_invitation(workspace_id: int, actor: Membership, invitation_id: int) -> None:
    _require_manager(actor)
    invitation = get_scoped(Invitation, workspace_id, invitation_id)
    invitation.revoked_at = invitation.revoked_at or utcnow()
    db.session.commit()


def find_open_invitation(token: str) -> Invitation:
    """The invitation behind a link, if it can still be used; otherwise NotFound."""
    invitation = db.session.scalar(select(Invitation).where(Invitation.token_hash == token_digest(token)))
    if (
        invitation is None
        or invitation.accepted_at is not None
        or invitation.revoked_at is not None
        or invitation.expires_at <= utcnow()
    ):
        raise NotFound("invitation")
    return invitation


def user_exists(email: str) -> bool:
    return db.session.scalar(select(User.id).where(User.email == email)) is not None


def accept_invitation(token: str, *, name: str, password: str) -> tuple[User, Membership]:
    """Use a one-time invitation. A new person sets their password; a known one proves theirs."""
    invitation = find_open_invitation(token)
    user = db.session.scalar(select(User).where(User.email == invitation.email))
    if user is None:
        check_password_rules(password)
        user = User(email=invitation.email, name=name.strip()[:120], password_hash=hash_password(password))
        db.session.add(user)
        db.session.flush()
    elif not verify_password(user.password_hash, password):
        raise ValidationFailed(_("The password is wrong."), code="wrong_password")
    membership = db.session.scalar(
        select(Membership).where(
            Membership.workspace_id == invitation.workspace_id, Membership.user_id == user.id
        )
    )
    if membership is None:
        membership = Membership(workspace_id=invitation.workspace_id, user_id=user.id, role=invitation.role)
        db.session.add(membership)
    invitation.accepted_at = utcnow()
    db.session.commit()
    return user, membership


# --- API tokens --------------------------------------------------------------------------------

TOKEN_PREFIX = "zd_"  # noqa: S105 (a public prefix, not a secret)


@dataclass(frozen=True)
class NewApiToken:
    api_token: ApiToken
    token: str  # shown once


def create_api_token(workspace_id: int, user_id: int, name: str = "") -> NewApiToken:
    membership = db.session.scalar(
        select(Membership).where(
            Membership.workspace_id == workspace_id,
            Membership.user_id == user_id,
            Membership.disabled_at.is_(None),
        )
    )
    if membership is None:
        raise ValidationFailed(_("That person is not an active member of this workspace."), code="not_member")
    token = new_token(TOKEN_PREFIX)
    api_token = ApiToken(
        workspace_id=workspace_id,
        user_id=user_id,
        name=" ".join(name.split())[:80],
        token_hash=token_digest(token),
        prefix=token[: len(TOKEN_PREFIX) + 6],
    )
    db.session.add(api_token)
    db.session.commit()
    return NewApiToken(api_token, token)


def list_api_tokens(workspace_id: int) -> list[ApiToken]:
    return list(
        db.session.scalars(
            scoped(select(ApiToken), ApiToken, workspace_id)
            .where(ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.created_at.desc())
        )
    )


def revoke_api_token(workspace_id: int, actor: Membership, token_id: int) -> None:
    _require_manager(actor)
    api_token = get_scoped(ApiToken, workspace_id, token_id)
    api_token.revoked_at = api_token.revoked_at or utcnow()
    db.session.commit()


def authenticate_token(raw: str) -> ApiToken | None:
    """The live token for a bearer string; its owner must still be an active member."""
    api_token = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(raw)))
    if api_token is None or api_token.revoked_at is not None:
        return None
    membership = db.session.scalar(
        select(Membership).where(
            Membership.workspace_id == api_token.workspace_id, Membership.user_id == api_token.user_id
        )
    )
    if membership is None or membership.is_disabled:
        return None
    now = utcnow()
    if api_token.last_used_at is None or now - api_token.last_used_at > timedelta(minutes=1):
        api_token.last_used_at = now
        db.session.commit()
    return api_token
