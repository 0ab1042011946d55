"""Automatic assignment: new customer messages in unassigned conversations go to the agents
online in the inbox, in turn (round robin), when the workspace turns it on.

Ingest only asks "is it on for this workspace?" (answered from a per-process cache for a few
seconds) and enqueues a task after its commit; the task takes the workspace row's lock (on
PostgreSQL) so concurrent assignments take turns one after another, and assigns only if the
conversation is still open and unassigned, so an agent who took it meanwhile keeps it.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import select, update

from crm.auth.models import Membership, Workspace
from crm.extensions import db
from crm.inbox.models import Conversation
from crm.realtime.broker import publish_after_commit

FLAG_SECONDS = 10.0

_flags: dict[int, tuple[float, bool]] = {}
_flags_lock = threading.Lock()


def enabled(workspace_id: int) -> bool:
    now = time.monotonic()
    with _flags_lock:
        hit = _flags.get(workspace_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    value = bool(db.session.scalar(select(Workspace.auto_assign).where(Workspace.id == workspace_id)))
    with _flags_lock:
        _flags[workspace_id] = (now + FLAG_SECONDS, value)
    return value


def forget(workspace_id: int | None = None) -> None:
    """The setting changed (or tests start over): ask the database next time."""
    with _flags_lock:
        if workspace_id is None:
            _flags.clear()
        else:
            _flags.pop(workspace_id, None)


def next_in_turn(candidates: list[int], last: int | None) -> int:
    """Round robin by user id: the first one after ``last``, wrapping around."""
    ordered = sorted(candidates)
    return next((user_id for user_id in ordered if last is None or user_id > last), ordered[0])


def auto_assign(workspace_id: int, conversation_id: int) -> int | None:
    """Assign the conversation to the next online agent; their user id, or None (turned off,
    nobody online, or already assigned or closed)."""
    from crm.realtime import presence

    workspace = db.session.scalar(select(Workspace).where(Workspace.id == workspace_id).with_for_update())
    if workspace is None or not workspace.auto_assign:
        db.session.rollback()
        return None
    online = presence.online_users(workspace_id)
    members = db.session.scalars(
        select(Membership.user_id).where(
            Membership.workspace_id == workspace_id, Membership.disabled_at.is_(None)
        )
    ).all()
    candidates = [user_id for user_id in members if user_id in online]
    if not candidates:
        db.session.rollback()
        return None
    chosen = next_in_turn(candidates, workspace.auto_assign_last_user_id)
    assigned = db.session.execute(
        update(Conversation)
        .where(
            Conversation.id == conversation_id,
            Conversation.workspace_id == workspace_id,
            Conversation.assignee_id.is_(None),
            Conversation.status == "open",
        )
        .values(assignee_id=chosen)
        .returning(Conversation.id)
    ).scalar()
    if assigned is None:
        db.session.rollback()
        return None
    workspace.auto_assign_last_user_id = chosen
    publish_after_commit(workspace_id, {"type": "conversation.updated", "conversation_id": conversation_id})
    db.session.commit()
    return chosen
