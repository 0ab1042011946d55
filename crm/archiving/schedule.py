"""The workspace setting "archive conversations with no message for N days", the nightly run
that applies it, and the removal of archive files nothing is archived in any more."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import or_, select, update

from crm.archiving.models import ArchivedConversation, ArchiveState, ConversationState, MessageArchive
from crm.auth.models import Membership, Workspace
from crm.db import utcnow
from crm.errors import Forbidden, ValidationFailed
from crm.extensions import db

log = logging.getLogger(__name__)

MIN_SCHEDULE_DAYS = 30
MAX_SCHEDULE_DAYS = 3650


def update_archive_settings(
    workspace_id: int, actor: Membership, *, enabled: bool, days: int | None
) -> Workspace:
    """Turn the nightly archiving on (after ``days`` without a message) or off; owners and admins."""
    if not actor.role_enum.manages_team:
        raise Forbidden()
    if enabled and (days is None or not MIN_SCHEDULE_DAYS <= days <= MAX_SCHEDULE_DAYS):
        raise ValidationFailed(
            _(
                "Archive conversations after between %(min)d and %(max)d days without a message.",
                min=MIN_SCHEDULE_DAYS,
                max=MAX_SCHEDULE_DAYS,
            ),
            code="invalid_archive_days",
        )
    workspace = db.session.get(Workspace, workspace_id)
    assert workspace is not None
    workspace.archive_after_days = days if enabled else None
    db.session.commit()
    return workspace


def recent_archives(workspace_id: int, limit: int = 20) -> list[MessageArchive]:
    return list(
        db.session.scalars(
            select(MessageArchive)
            .where(MessageArchive.workspace_id == workspace_id)
            .order_by(MessageArchive.id.desc())
            .limit(limit)
        )
    )


def run_scheduled_archives() -> dict[str, Any]:
    """Nightly: every workspace with the setting on is archived; runs left unfinished anywhere
    (a ``flask crm archive`` that was stopped) are finished; spent files are removed. A workspace
    whose run fails is logged and the others go on."""
    from crm.archiving.export import archive_workspace, resume_workspace
    from crm.archiving.runlock import ArchiveBusy

    days_of = Workspace.archive_after_days
    scheduled: dict[int, int] = {
        workspace_id: days
        for workspace_id, days in db.session.execute(
            select(Workspace.id, days_of).where(days_of.is_not(None))
        )
        if days is not None
    }
    unfinished = set(
        db.session.scalars(
            select(MessageArchive.workspace_id).where(
                MessageArchive.state.in_([ArchiveState.EXPORTING.value, ArchiveState.DELETING.value])
            )
        )
    )
    db.session.commit()
    summary = {"workspaces": 0, "archives": 0, "conversations": 0, "messages": 0, "errors": 0}
    for workspace_id in sorted(set(scheduled) | unfinished):
        days = scheduled.get(workspace_id)
        try:
            if days is None:
                results = resume_workspace(workspace_id)
            else:
                results = archive_workspace(workspace_id, utcnow() - timedelta(days=days), source="schedule")
        except ArchiveBusy:
            log.info("archive: workspace %s is being archived by another run", workspace_id)
            continue
        except Exception:
            db.session.rollback()
            log.exception("archive: workspace %s failed", workspace_id)
            summary["errors"] += 1
            continue
        summary["workspaces"] += 1
        for result in results:
            summary["archives"] += 1
            summary["errors"] += result.error is not None
            if not result.resumed:
                summary["conversations"] += result.archived
                summary["messages"] += result.messages if result.archived else 0
    summary["spent"] = remove_spent_archives()
    return summary


def remove_spent_archives() -> int:
    """Files in which nothing is archived any more (every conversation restored, skipped, or gone
    with its purged lead) are deleted from the storage: nothing would ever read them, and a
    purged lead's messages must not outlive them there."""
    from crm.media.storage import get_storage

    still_needed = select(ArchivedConversation.id).where(
        ArchivedConversation.archive_id == MessageArchive.id,
        or_(
            ArchivedConversation.state == ConversationState.ARCHIVED.value,
            ArchivedConversation.state == ConversationState.EXPORTED.value,
            ArchivedConversation.state == ConversationState.DELETING.value,
        ),
    )
    spent = db.session.execute(
        select(MessageArchive.id, MessageArchive.storage_key)
        .where(MessageArchive.state == ArchiveState.DONE.value, ~still_needed.exists())
        .limit(1000)
    ).all()
    removed = 0
    for archive_id, key in spent:
        try:
            get_storage().delete(key)
        except Exception:
            log.exception("archive %s: could not remove the spent file %s", archive_id, key)
            continue
        db.session.execute(
            update(MessageArchive)
            .where(MessageArchive.id == archive_id, MessageArchive.state == ArchiveState.DONE.value)
            .values(state=ArchiveState.SPENT.value)
        )
        db.session.commit()
        removed += 1
    return removed
