"""What every thread shows of the workspace's team: the members a conversation can be assigned
to and whether AI replies are on (the bot switch and "suggest reply").

Both change rarely, yet they were two statements on every conversation opened and on every live
header refresh. So each process remembers them for a few seconds:

- a change made through this process (a member invited, disabled or back, a new role, the AI
  switch) is seen at once: the workspace's entry is forgotten when that transaction commits;
- another process shows it at most ``TEAM_FACTS_TTL`` seconds late. Nothing is decided from
  these facts: assigning checks membership again in its own statement, and a disabled member's
  sessions end when they are disabled.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from crm.auth.models import Membership, User
from crm.extensions import db

TEAM_FACTS_TTL = 5.0  # seconds
_EXTENSION = "crm.team_facts"
_lock = threading.Lock()


@dataclass(frozen=True)
class TeamFacts:
    members: tuple[tuple[int, str], ...]  # (user id, name or email) of the active members, by name
    ai_on: bool


def _remembered() -> dict[int, tuple[float, TeamFacts]]:
    # Per app, not per module: the tests build many apps whose workspaces share ids.
    return current_app.extensions.setdefault(_EXTENSION, {})


def team_facts(workspace_id: int) -> TeamFacts:
    remembered = _remembered()
    now = time.monotonic()
    with _lock:
        found = remembered.get(workspace_id)
    if found is not None and found[0] > now:
        return found[1]
    facts = TeamFacts(members=tuple(_read_members(workspace_id)), ai_on=_read_ai_on(workspace_id))
    with _lock:
        remembered[workspace_id] = (now + TEAM_FACTS_TTL, facts)
    return facts


def forget(workspace_id: int | None, remembered: dict[int, tuple[float, TeamFacts]] | None = None) -> None:
    """Read the workspace's facts again next time (``None``: every workspace's)."""
    remembered = _remembered() if remembered is None else remembered
    with _lock:
        if workspace_id is None:
            remembered.clear()
        else:
            remembered.pop(workspace_id, None)


def _read_members(workspace_id: int) -> list[tuple[int, str]]:
    rows = db.session.execute(
        select(User.id, User.name, User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.workspace_id == workspace_id, Membership.disabled_at.is_(None))
        .order_by(User.name, User.email)
    ).all()
    return [(r.id, r.name or r.email) for r in rows]


def _read_ai_on(workspace_id: int) -> bool:
    from crm.ai.settings import settings_of  # not at import: crm.ai imports the inbox

    return bool(settings_of(workspace_id).enabled)


@event.listens_for(Session, "after_flush")
def _forget_on_commit(session: Session, _context: Any) -> None:
    """A flushed change to a membership, a person or the AI settings: forget the workspace's
    facts once it commits (a person can be in several workspaces: all of them then)."""
    from crm.ai.models import AISettings
    from crm.db import after_commit

    changed: set[int | None] = set()
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, Membership | AISettings):
            changed.add(obj.workspace_id)
        elif isinstance(obj, User):
            changed.add(None)
    if not changed or not has_app_context():
        return
    remembered = _remembered()  # this app's, whatever context the commit runs in

    def forget_them() -> None:
        for workspace_id in (None,) if None in changed else changed:
            forget(workspace_id, remembered)

    after_commit(forget_them, session)
