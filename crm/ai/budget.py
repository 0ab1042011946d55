"""The workspace's Gemini budget: requests per minute (any 60 s window) and per day (the
workspace's calendar day), checked and taken before each call.

Every call is a row in ``ai_calls``; taking one locks the workspace's settings row first (an
UPDATE: a row lock on PostgreSQL, the write lock on SQLite), so workers in any number of
processes never count past the budget together, and a lost Redis cannot reset it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select, update

from crm.ai.models import AICall, AISettings
from crm.db import utcnow
from crm.extensions import db

MINUTE = timedelta(seconds=60)
# A call is counted when its slot is taken and by Gemini when it arrives; between the two lie a
# commit and the network. A slot of the minute is held a second longer, so that a call taken
# just as an earlier one leaves our window never lands inside Gemini's (see crm/whatsapp/pacing.py).
HELD = MINUTE + timedelta(seconds=1)


@dataclass(frozen=True)
class Grant:
    call_id: int | None  # None: refused
    wait: float = 0.0  # refused for the minute: seconds until a slot frees
    day_spent: bool = False


def day_start(timezone: str, now: datetime) -> datetime:
    local = now.astimezone(ZoneInfo(timezone))
    return datetime.combine(local.date(), datetime.min.time(), tzinfo=local.tzinfo)


def take(workspace_id: int, per_minute: int, per_day: int, timezone: str) -> Grant:
    """Take one request of the budget (committed at once), or say why not."""
    locked = db.session.execute(
        update(AISettings)
        .where(AISettings.workspace_id == workspace_id)
        .values(updated_at=AISettings.updated_at)
    )
    if not locked.rowcount:  # type: ignore[attr-defined]
        db.session.rollback()
        return Grant(None, day_spent=True)
    now = utcnow()  # after the lock: a call that waited for it counts from now
    calls = AICall.__table__
    in_workspace = calls.c.workspace_id == workspace_id
    today = db.session.scalar(
        select(func.count()).select_from(calls).where(in_workspace, calls.c.at >= day_start(timezone, now))
    )
    if (today or 0) >= per_day:
        db.session.rollback()
        return Grant(None, day_spent=True)
    window = db.session.scalars(
        select(calls.c.at).where(in_workspace, calls.c.at > now - HELD).order_by(calls.c.at).limit(per_minute)
    ).all()
    if len(window) >= per_minute:
        db.session.rollback()
        return Grant(None, wait=max(0.05, (window[0] + HELD - now).total_seconds()))
    call = AICall(workspace_id=workspace_id, at=now)
    db.session.add(call)
    db.session.commit()
    return Grant(call.id)


def record_outcome(call_id: int, outcome: str) -> None:
    db.session.execute(update(AICall).where(AICall.id == call_id).values(outcome=outcome[:16]))


def used(workspace_id: int, timezone: str) -> dict[str, int]:
    """Requests in the last minute and today (the settings page shows them)."""
    now = utcnow()
    calls = AICall.__table__
    in_workspace = calls.c.workspace_id == workspace_id

    def count(since: datetime) -> int:
        return (
            db.session.scalar(select(func.count()).select_from(calls).where(in_workspace, calls.c.at > since))
            or 0
        )

    return {"minute": count(now - MINUTE), "day": count(day_start(timezone, now) - timedelta(microseconds=1))}


def purge_old_calls(older_than: timedelta = timedelta(days=2)) -> int:
    result = db.session.execute(delete(AICall).where(AICall.at < utcnow() - older_than))
    db.session.commit()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
