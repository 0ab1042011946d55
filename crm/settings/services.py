"""Workspace-wide settings."""

from __future__ import annotations

from flask_babel import gettext as _
from sqlalchemy import select

from crm.auth.models import Membership, Workspace
from crm.auth.services import check_country, check_timezone, check_workspace_name
from crm.errors import Conflict, Forbidden, ValidationFailed
from crm.extensions import db
from crm.tenancy import get_scoped

LOCALES = ("pt_BR", "en")


def get_workspace(workspace_id: int) -> Workspace:
    workspace = db.session.get(Workspace, workspace_id)
    assert workspace is not None, "a bound workspace always exists"
    return workspace


def update_workspace(
    workspace_id: int,
    actor: Membership,
    *,
    name: str,
    country: str,
    timezone: str,
    locale: str,
    auto_assign: bool = False,
) -> Workspace:
    """Rename and set the defaults (phone region, time zone, language, automatic assignment);
    validated before writing."""
    from crm.inbox import assignment

    if not actor.role_enum.manages_team:
        raise Forbidden()
    name = check_workspace_name(name)
    country = check_country(country)
    timezone = check_timezone(timezone)
    if locale not in LOCALES:
        raise ValidationFailed(_("Unknown language."), code="invalid_locale")
    taken = db.session.scalar(
        select(Workspace.id).where(Workspace.name == name, Workspace.id != workspace_id)
    )
    if taken is not None:
        raise Conflict(_("Another workspace already has this name."), code="duplicate_name")
    workspace = get_workspace(workspace_id)
    workspace.name, workspace.country, workspace.timezone, workspace.locale = name, country, timezone, locale
    workspace.auto_assign = auto_assign
    db.session.commit()
    assignment.forget(workspace_id)
    return workspace


def get_membership(workspace_id: int, member_id: int) -> Membership:
    return get_scoped(Membership, workspace_id, member_id)
