"""What every thread shows of the workspace's team: the members a conversation can be assigned
to and whether AI replies are on (the bot switch and "suggest reply").

Both change rarely, yet they were two statements on every conversation opened and on every live
header refresh. So each process remembers them for a few seconds:

- a change made through this process (a member invited, disabled or back, a new role, the AI
  switch) is seen at once: the workspace's entry is forgotten when that transaction commits;
- another process shows it at most ``TEAM_FACTS_TTL`` seconds late. Nothing is decided from
  these facts, only shown: assigning checks membership again in its own statement, asking for a
  suggested reply reads the AI switch itself, and a disabled member's sessions end at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
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


@dataclass
class _Memory:
    """One app's remembered facts. ``generation`` moves on each time facts are forgotten, so a
    read that started before a change committed is not kept after it."""

    facts: dict[int, tuple[float, TeamFacts]] = field(default_factory=dict)
    generation: int = 0


def _memory() -> _Memory:
    # Per app, not per module: the tests build many apps whose workspaces share ids.
    return current_app.extensions.setdefault(_EXTENSION, _Memory())


def team_facts(workspace_id: int) -> TeamFacts:
    memory = _memory()
    now = time.monotonic()
    with _lock:
        found = memory.facts.get(workspace_id)
        generation = memory.generation
    if found is not None and found[0] > now:
        return found[1]
    facts = TeamFacts(members=tuple(_read_members(workspace_id)), ai_on=_read_ai_on(workspace_id))
    with _lock:
        if memory.generation == generation:  # nothing was forgotten meanwhile
            memory.facts[workspace_id] = (now + TEAM_FACTS_TTL, facts)
    return facts


def forget(workspace_id: int | None, memory: _Memory | None = None) -> None:
    """Read the workspace's facts again next time (``None``: every workspace's)."""
    memory = _memory() if memory is None else memory
    with _lock:
        memory.generation += 1
        if workspace_id is None:
            memory.facts.clear()
        else:
            memory.facts.pop(workspace_id, None)


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
    memory = _memory()  # this app's, whatever context the commit runs in

    def forget_them() -> None:
        for workspace_id in (None,) if None in changed else changed:
            forget(workspace_id, memory)

    after_commit(forget_them, session)
