"""Canned responses: saved replies inserted in the composer by typing ``/shortcut``.

``{{name}}`` in a saved reply becomes the customer's first name (empty when we don't know it).
"""

from __future__ import annotations

import re

from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from crm.auth.models import Membership
from crm.db import LIKE_ESCAPE, like_escaped
from crm.errors import Conflict, Forbidden, ValidationFailed
from crm.extensions import db
from crm.inbox.models import CannedResponse
from crm.tenancy import get_scoped, scoped
from crm.textcheck import check_clean_text

SHORTCUT = re.compile(r"[a-z0-9_-]{1,32}")
MAX_TEXT = 4096
SUGGESTIONS = 8


def normalise_shortcut(raw: object) -> str:
    value = raw.strip().lstrip("/").lower() if isinstance(raw, str) else ""
    if not SHORTCUT.fullmatch(value):
        raise ValidationFailed(
            _("Use 1 to 32 lower-case letters, digits, - or _ for the shortcut."), code="invalid_shortcut"
        )
    return value


def list_canned(workspace_id: int) -> list[CannedResponse]:
    stmt = scoped(select(CannedResponse), CannedResponse, workspace_id).order_by(CannedResponse.shortcut)
    return list(db.session.scalars(stmt))


def create_canned(workspace_id: int, actor: Membership, shortcut: object, text: object) -> CannedResponse:
    if not actor.role_enum.manages_team:
        raise Forbidden()
    key = normalise_shortcut(shortcut)
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise ValidationFailed(_("Write the reply (up to 4096 characters)."), code="invalid_text")
    check_clean_text(text)
    duplicate = Conflict(
        _("There is already a reply with the shortcut /%(shortcut)s.", shortcut=key), code="duplicate"
    )
    taken = db.session.scalar(
        scoped(select(CannedResponse.id), CannedResponse, workspace_id).where(CannedResponse.shortcut == key)
    )
    if taken is not None:
        raise duplicate
    canned = CannedResponse(workspace_id=workspace_id, shortcut=key, text=text.strip())
    db.session.add(canned)
    try:
        db.session.commit()
    except IntegrityError:  # saved at the same moment by someone else
        db.session.rollback()
        raise duplicate from None
    return canned


def delete_canned(workspace_id: int, actor: Membership, canned_id: int) -> None:
    if not actor.role_enum.manages_team:
        raise Forbidden()
    db.session.delete(get_scoped(CannedResponse, workspace_id, canned_id))
    db.session.commit()


def suggestions(workspace_id: int, typed: str) -> list[CannedResponse]:
    """Saved replies whose shortcut starts with what follows the ``/`` (all of them for a bare
    ``/``); nothing when the composer holds anything else."""
    if not typed.startswith("/") or len(typed) > 33:
        return []
    prefix = typed[1:].lower()
    if prefix and not SHORTCUT.fullmatch(prefix):
        return []
    stmt = (
        scoped(select(CannedResponse), CannedResponse, workspace_id)
        .where(CannedResponse.shortcut.like(f"{like_escaped(prefix)}%", escape=LIKE_ESCAPE))
        .order_by(CannedResponse.shortcut)
        .limit(SUGGESTIONS)
    )
    return list(db.session.scalars(stmt))


def fill(text: str, lead_name: str) -> str:
    first = lead_name.split()[0] if lead_name.split() else ""
    return re.sub(r"\{\{\s*name\s*\}\}", lambda _match: first, text)  # a name is text, not a pattern
