"""A broadcast's progress as its page shows it: state, counters, the bar and the estimated finish.

The snapshot holds plain values (no ORM rows), so one reading can be rendered in every language
by the realtime fan-out: a dispatcher tick costs one reading per process, however many tabs
watch the broadcast (see ``shared_snapshot``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from crm.auth.models import Workspace
from crm.broadcasts.dispatch import outside_hours
from crm.broadcasts.eta import Estimate, estimate
from crm.broadcasts.models import Broadcast, BroadcastStatus
from crm.broadcasts.results import REACHED
from crm.broadcasts.services import COUNTED, broadcast_accounts, counts, get_broadcast
from crm.db import utcnow
from crm.extensions import db

BAR_WIDTH = 1000  # the bar's SVG user units
# The order of the bar's segments, left to right (what is still queued is the empty rest).
SEGMENTS = ("read", "delivered", "sent", "failed", "skipped")
# Receipts (delivered, read) keep arriving after the last send: a finished broadcast's counters
# refresh themselves for this long.
RECEIPTS_WINDOW = timedelta(days=2)


@dataclass(frozen=True)
class Progress:
    id: int
    name: str
    status: str
    pause_reason: str | None
    created_at: datetime
    created_by: str
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    send_from: str | None
    send_until: str | None
    counts: dict[str, int] = field(default_factory=dict)
    estimate: Estimate | None = None
    opens_at: datetime | None = None  # outside its sending hours: when they open again
    read_at: datetime = field(default_factory=utcnow)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def reached(self) -> int:
        """Recipients whose message the provider took (sent, then maybe delivered and read)."""
        return sum(self.counts.get(state, 0) for state in REACHED)

    @property
    def done(self) -> int:
        """Recipients no longer waiting: sent, failed or skipped."""
        return self.total - self.counts.get("queued", 0)

    @property
    def percent(self) -> int:
        return int(self.done * 100 / self.total) if self.total else 100

    @property
    def finished(self) -> bool:
        return BroadcastStatus(self.status).finished

    @property
    def refreshes(self) -> bool:
        """A finished broadcast still collecting receipts: its counters poll (nothing is pushed)."""
        return (
            self.status == BroadcastStatus.DONE.value
            and self.finished_at is not None
            and self.read_at - self.finished_at < RECEIPTS_WINDOW
        )

    def segments(self) -> list[tuple[str, int, int]]:
        """(outcome, x, width) of each part of the bar, in SVG units out of ``BAR_WIDTH``."""
        total = self.total
        if not total:
            return []
        parts, x = [], 0
        for state in SEGMENTS:
            width = round(self.counts.get(state, 0) * BAR_WIDTH / total)
            if width:
                parts.append((state, x, min(width, BAR_WIDTH - x)))
                x += width
        return parts


def snapshot(workspace_id: int, broadcast_id: int) -> Progress:
    """Read a broadcast's progress now; NotFound for another workspace's (or a missing) one."""
    broadcast = get_broadcast(workspace_id, broadcast_id)
    now = utcnow()
    found = counts(broadcast.id)
    forecast = opens_at = None
    if broadcast.status in (BroadcastStatus.RUNNING.value, BroadcastStatus.SCHEDULED.value):
        tz = db.session.scalar(select(Workspace.timezone).where(Workspace.id == workspace_id)) or "UTC"
        forecast = estimate(broadcast, tz, now)
        wait = outside_hours(broadcast.send_from, broadcast.send_until, tz, now)
        if wait and broadcast.status == BroadcastStatus.RUNNING.value:
            opens_at = now + timedelta(seconds=wait)
    return Progress(
        id=broadcast.id,
        name=broadcast.name,
        status=broadcast.status,
        pause_reason=broadcast.pause_reason,
        created_at=broadcast.created_at,
        created_by=_creator(workspace_id, broadcast.created_by_user_id),
        scheduled_at=broadcast.scheduled_at,
        started_at=broadcast.started_at,
        finished_at=broadcast.finished_at,
        send_from=broadcast.send_from,
        send_until=broadcast.send_until,
        counts={state: found.get(state, 0) for state in COUNTED},
        estimate=forecast,
        opens_at=opens_at,
        read_at=now,
    )


def _creator(workspace_id: int, user_id: int | None) -> str:
    if user_id is None:
        return ""
    from crm.leads.pages import member_names

    return member_names(workspace_id, {user_id}).get(user_id, "")


# --- one reading per event, shared by every language and tab of this process -------------------

SHARED_SECONDS = 5.0
_shared: dict[tuple[int, int, str], tuple[float, Progress]] = {}
_shared_lock = threading.Lock()


def shared_snapshot(workspace_id: int, broadcast_id: int, key: str) -> Progress:
    """``snapshot`` read once per ``key`` (the realtime event's id) in this process: the fan-out
    thread renders an event once per language."""
    if not key:
        return snapshot(workspace_id, broadcast_id)
    now = time.monotonic()
    with _shared_lock:
        found = _shared.get((workspace_id, broadcast_id, key))
        if found is not None and found[0] > now:
            return found[1]
    progress = snapshot(workspace_id, broadcast_id)
    with _shared_lock:
        if len(_shared) > 500:
            for stale in [k for k, (expires, _) in _shared.items() if expires <= now]:
                del _shared[stale]
        _shared[(workspace_id, broadcast_id, key)] = (now + SHARED_SECONDS, progress)
    return progress


# --- what was asked for (the page's details; never pushed) --------------------------------------


@dataclass(frozen=True)
class Details:
    variants: list[str]
    template: str | None
    template_values: list[tuple[str, str]]
    tags: list[str]
    exclude_tags: list[str]
    exclude_contacted_days: int | None
    groups: list[str]
    numbers: list[str]
    media_name: str | None
    media_kind: str | None


def _spelled(workspace_id: int, keys: list[Any]) -> list[str]:
    """Tags as the workspace spells them (a broadcast keeps their case-folded keys)."""
    from sqlalchemy import func

    from crm.leads.models import LeadTag

    wanted = [str(k) for k in keys]
    if not wanted:
        return []
    rows = db.session.execute(
        select(LeadTag.key, func.min(LeadTag.name))
        .where(LeadTag.workspace_id == workspace_id, LeadTag.key.in_(wanted))
        .group_by(LeadTag.key)
    ).all()
    names = {key: name for key, name in rows}
    return [names.get(key, key) for key in wanted]


def details(workspace_id: int, broadcast: Broadcast) -> Details:
    from crm.media.models import MediaFile
    from crm.whatsapp.models import WhatsAppGroup

    audience: dict[str, Any] = broadcast.audience or {}
    group_ids = [i for i in audience.get("groups") or [] if isinstance(i, int)]
    groups = (
        list(
            db.session.scalars(
                select(WhatsAppGroup.name).where(
                    WhatsAppGroup.workspace_id == workspace_id, WhatsAppGroup.id.in_(group_ids)
                )
            )
        )
        if group_ids
        else []
    )
    media = db.session.get(MediaFile, broadcast.media_file_id) if broadcast.media_file_id else None
    template = None
    if broadcast.template_name:
        template = f"{broadcast.template_name} ({broadcast.template_language or ''})"
    return Details(
        variants=list(broadcast.variants or []),
        template=template,
        template_values=sorted(
            ((str(k), str(v)) for k, v in (broadcast.template_values or {}).items()),
            key=lambda kv: (len(kv[0]), kv[0]),
        ),
        tags=_spelled(workspace_id, audience.get("tags") or []),
        exclude_tags=_spelled(workspace_id, audience.get("exclude_tags") or []),
        exclude_contacted_days=audience.get("exclude_contacted_days"),
        groups=sorted(groups, key=str.lower),
        numbers=[a.name for a in broadcast_accounts(broadcast.id)],
        media_name=media.filename if media is not None and media.workspace_id == workspace_id else None,
        media_kind=media.kind if media is not None and media.workspace_id == workspace_id else None,
    )
