"""The trash: deleted leads stay restorable for the workspace's ``trash_days``, then are purged
with their conversations, messages and files.

A lead in the trash is out of lists, exports and broadcasts, and their conversations are out of
the inbox; if they write again they come back (the inbound path restores them).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import select, update

from crm.auth.models import Workspace
from crm.db import utcnow
from crm.extensions import db
from crm.leads.models import Lead
from crm.tenancy import get_scoped

PURGE_BATCH = 200


def trash_leads(workspace_id: int, lead_ids: Iterable[int]) -> int:
    """Move leads to the trash; returns how many moved (those already there don't count)."""
    ids = list(lead_ids)
    if not ids:
        return 0
    moved: int = db.session.execute(  # type: ignore[attr-defined]
        update(Lead)
        .where(Lead.workspace_id == workspace_id, Lead.id.in_(ids), Lead.kind == "person")
        .where(Lead.deleted_at.is_(None))
        .values(deleted_at=utcnow())
    ).rowcount
    db.session.commit()
    return moved


def restore_leads(workspace_id: int, lead_ids: Iterable[int]) -> int:
    ids = list(lead_ids)
    if not ids:
        return 0
    restored: int = db.session.execute(  # type: ignore[attr-defined]
        update(Lead)
        .where(Lead.workspace_id == workspace_id, Lead.id.in_(ids), Lead.deleted_at.isnot(None))
        .values(deleted_at=None)
    ).rowcount
    db.session.commit()
    return restored


def purge_lead(workspace_id: int, lead_id: int) -> int:
    """Delete a lead for good: their conversations, messages and the files those carried. Returns
    how many files were removed."""
    from crm.inbox.keys import forget_messages
    from crm.inbox.models import Conversation, Message
    from crm.media.cleanup import delete_unreferenced

    lead = get_scoped(Lead, workspace_id, lead_id)
    media_ids = list(
        db.session.scalars(
            select(Message.media_file_id)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Conversation.lead_id == lead.id, Message.media_file_id.isnot(None))
        )
    )
    forget_messages(
        select(Message.id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Conversation.lead_id == lead.id)
    )
    db.session.delete(lead)  # conversations, messages, notes and consent go with it: ON DELETE CASCADE
    db.session.commit()
    return delete_unreferenced([m for m in media_ids if m is not None])


def purge_trashed(workspace_id: int, lead_ids: Iterable[int]) -> int:
    """ "Delete forever" from the trash: only leads that are in it. Returns how many were purged."""
    ids = _in_trash(workspace_id, lead_ids)
    for lead_id in ids:
        purge_lead(workspace_id, lead_id)
    return len(ids)


def purge_trashed_later(workspace_id: int, lead_ids: Iterable[int]) -> int:
    """The same, by a task: hundreds of leads with their conversations and files (maybe on S3)
    are not deleted inside a web request. Returns how many will be."""
    from crm.leads.tasks import purge_trashed_task
    from crm.worker import enqueue_after_commit

    ids = _in_trash(workspace_id, lead_ids)
    if ids:
        enqueue_after_commit(purge_trashed_task, workspace_id, ids)
    db.session.commit()
    return len(ids)


def _in_trash(workspace_id: int, lead_ids: Iterable[int]) -> list[int]:
    return list(
        db.session.scalars(
            select(Lead.id).where(
                Lead.workspace_id == workspace_id, Lead.id.in_(list(lead_ids)), Lead.deleted_at.isnot(None)
            )
        )
    )


def purge_expired_trash() -> int:
    """Purge the leads that have been in the trash longer than their workspace keeps them (the
    periodic task). Returns how many were purged."""
    now = utcnow()
    purged = 0
    for workspace_id, days in db.session.execute(select(Workspace.id, Workspace.trash_days)).all():
        while True:
            ids = db.session.scalars(
                select(Lead.id)
                .where(Lead.workspace_id == workspace_id, Lead.deleted_at < now - timedelta(days=days))
                .limit(PURGE_BATCH)
            ).all()
            for lead_id in ids:
                purge_lead(workspace_id, lead_id)
            purged += len(ids)
            if len(ids) < PURGE_BATCH:
                break
    return purged
