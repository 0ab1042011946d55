"""Actions on a selection of leads from the list: tag and untag many at once.

(Opting out and moving to the trash in bulk are ``consent.set_consent`` and ``trash.trash_leads``.)
A selection is what a person ticked on screen, so it is bounded; ids of another workspace, of
groups or of leads in the trash are silently left out, like ids that don't exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import delete, func, select

from crm.db import insert_ignoring_conflicts
from crm.errors import ValidationFailed
from crm.extensions import db
from crm.leads.models import Lead, LeadTag
from crm.leads.services import MAX_TAGS_PER_LEAD, announce_leads_changed, clean_tags
from crm.params import parse_id

MAX_SELECTION = 500


def selected_ids(raw: Iterable[object]) -> list[int]:
    """Lead ids from a form's checkboxes: the valid ones, de-duplicated; a 422 when none or too many."""
    ids = list(dict.fromkeys(i for i in (parse_id(value) for value in raw) if i is not None))
    if not ids:
        raise ValidationFailed(_("Select at least one lead first."), code="empty_selection")
    if len(ids) > MAX_SELECTION:
        raise ValidationFailed(
            _("Select at most %(n)d leads at a time.", n=MAX_SELECTION), code="selection_too_large"
        )
    return ids


def _one_tag(tag: Any) -> str:
    names = clean_tags([tag])
    if not names:
        raise ValidationFailed(_("Type the tag."), code="invalid_tags")
    return names[0]


def _people(workspace_id: int, lead_ids: list[int]) -> list[int]:
    return list(
        db.session.scalars(
            select(Lead.id).where(
                Lead.workspace_id == workspace_id,
                Lead.id.in_(lead_ids),
                Lead.kind == "person",
                Lead.deleted_at.is_(None),
            )
        )
    )


def tag_leads(workspace_id: int, lead_ids: list[int], tag: Any) -> int:
    """Add ``tag`` to the selected leads that lack it (a lead already at the tag limit is skipped).
    Commits; returns how many leads got it. Two people tagging at once end with one tag row: the
    database's unique (lead, tag) constraint decides, never a check-then-insert."""
    name = _one_tag(tag)
    key = name.casefold()
    ids = _people(workspace_id, lead_ids)
    if not ids:
        return 0
    skip = set(
        db.session.scalars(select(LeadTag.lead_id).where(LeadTag.lead_id.in_(ids), LeadTag.key == key))
    ) | set(
        db.session.scalars(
            select(LeadTag.lead_id)
            .where(LeadTag.lead_id.in_(ids))
            .group_by(LeadTag.lead_id)
            .having(func.count() >= MAX_TAGS_PER_LEAD)
        )
    )
    tagged = [lead_id for lead_id in ids if lead_id not in skip]
    rows = [
        {"workspace_id": workspace_id, "lead_id": lead_id, "name": name, "key": key} for lead_id in tagged
    ]
    if rows:
        # One statement (psycopg's executemany sends one per row): PostgreSQL checks a statement's
        # tags at once (migration 0023). Compiled afresh each time, for at most MAX_SELECTION rows.
        db.session.execute(insert_ignoring_conflicts(LeadTag).values(rows))
    announce_leads_changed(workspace_id, tagged)
    db.session.commit()
    return len(rows)


def untag_leads(workspace_id: int, lead_ids: list[int], tag: Any) -> int:
    """Remove ``tag`` (matched case-insensitively) from the selected leads. Commits; returns how
    many leads lost it."""
    key = _one_tag(tag).casefold()
    ids = _people(workspace_id, lead_ids)
    if not ids:
        return 0
    removed: int = db.session.execute(  # type: ignore[attr-defined]
        delete(LeadTag).where(
            LeadTag.workspace_id == workspace_id, LeadTag.lead_id.in_(ids), LeadTag.key == key
        )
    ).rowcount
    if removed:
        announce_leads_changed(workspace_id, ids)
    db.session.commit()
    return removed
