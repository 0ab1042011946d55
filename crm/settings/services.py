"""Workspace-wide settings."""

from __future__ import annotations

from flask_babel import gettext as _
from sqlalchemy import select

from crm.auth.models import Membership, Workspace
from crm.auth.services import check_country, check_timezone, check_workspace_name
from crm.errors import Conflict, Forbidden, ValidationFailed
from crm.extensions import db
from crm.tenancy import get_scoped
from crm.textcheck import check_clean_text

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


MAX_TRASH_DAYS = 365
MAX_CONSENT_REPLY = 1000


def update_consent_settings(
    workspace_id: int,
    actor: Membership,
    *,
    opt_out_keywords: str,
    opt_in_keywords: str,
    opt_out_reply: str,
    opt_in_reply: str,
    trash_days: int,
) -> Workspace:
    """The keywords leads write to opt out or in, what they are told then, and how long deleted
    leads stay in the trash. Empty keywords turn keyword handling off; empty replies use ours."""
    from crm.leads.consent import forget_keywords, parse_keywords

    if not actor.role_enum.manages_team:
        raise Forbidden()
    out_words, in_words = parse_keywords(opt_out_keywords), parse_keywords(opt_in_keywords)
    both = sorted(set(out_words) & set(in_words))
    if both:
        raise ValidationFailed(
            _("A keyword cannot both opt out and opt in: %(words)s", words=", ".join(both)),
            code="invalid_keywords",
        )
    replies = [check_clean_text(r, code="invalid_reply").strip() for r in (opt_out_reply, opt_in_reply)]
    if any(len(r) > MAX_CONSENT_REPLY for r in replies):
        raise ValidationFailed(
            _("A reply can have at most %(n)d characters.", n=MAX_CONSENT_REPLY), code="invalid_reply"
        )
    if not 1 <= trash_days <= MAX_TRASH_DAYS:
        raise ValidationFailed(
            _("Keep deleted leads between 1 and %(n)d days.", n=MAX_TRASH_DAYS), code="invalid_trash_days"
        )
    workspace = get_workspace(workspace_id)
    workspace.opt_out_keywords = ", ".join(out_words)
    workspace.opt_in_keywords = ", ".join(in_words)
    workspace.opt_out_reply, workspace.opt_in_reply = (r or None for r in replies)
    workspace.trash_days = trash_days
    db.session.commit()
    forget_keywords(workspace_id)
    return workspace
