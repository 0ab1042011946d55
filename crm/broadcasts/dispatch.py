"""The dispatcher: moves a running broadcast's recipients into the outbox, a few at a time.

Every tick (about a second) it tops up each number's share of the outbox to what that number
can send in the next couple of seconds (its own rate limiter, ``pacing``, still decides when
each message goes). Recipients are claimed from the database (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; SQLite has one writer at a time), and each one's message is written with its
recipient's new state in one transaction, with the idempotency key ``broadcast:<recipient id>``:
a worker killed mid-batch leaves its recipients pending, a second worker claims other rows, and
the outbox sends each message once.

A broadcast that is not running holds its messages back at send time too (``held_back``), so a
message queued just before a pause never goes out while paused.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from time import monotonic
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import delete, func, select, update

from crm.auth.models import Workspace
from crm.broadcasts.models import (
    Broadcast,
    BroadcastRecipient,
    BroadcastStatus,
    RecipientState,
)
from crm.broadcasts.release import release
from crm.broadcasts.services import _announce, _back_to_waiting, _pause, broadcast_accounts
from crm.db import utcnow
from crm.errors import DomainError
from crm.extensions import db
from crm.inbox.models import Message
from crm.realtime.broker import publish_after_commit
from crm.whatsapp import pacing
from crm.whatsapp.models import Health, Outbox, OutboxState, WhatsAppAccount

log = logging.getLogger(__name__)

TICK = timedelta(seconds=1)
AHEAD = 2.0  # seconds of sending kept in the outbox per number
LONG_PAUSE = timedelta(minutes=5)  # a number told to wait longer than this pauses the broadcast


@dataclass(frozen=True)
class Tick:
    status: str
    released: int = 0
    skipped: int = 0
    next_in: float | None = None  # seconds until the next tick (None: no more ticks)


def dispatch(broadcast_id: int, now: datetime | None = None) -> Tick:
    """One tick of a broadcast. Safe to run in several workers at once."""
    started = monotonic()
    now = now or utcnow()
    broadcast = db.session.get(Broadcast, broadcast_id)
    if broadcast is None:
        return Tick("missing")
    if broadcast.status == BroadcastStatus.SCHEDULED.value:
        if broadcast.next_tick_at is not None and broadcast.next_tick_at > now:
            return Tick("scheduled", next_in=(broadcast.next_tick_at - now).total_seconds())
        _start(broadcast, now)
    if broadcast.status != BroadcastStatus.RUNNING.value:
        db.session.commit()
        return Tick(broadcast.status)
    if not _take_tick(broadcast.id, now):
        db.session.commit()
        return Tick("running")  # another worker's tick just ran: this chain ends here
    tz = db.session.scalar(select(Workspace.timezone).where(Workspace.id == broadcast.workspace_id))
    wait = outside_hours(broadcast.send_from, broadcast.send_until, tz or "UTC", now)
    if wait:
        _set_next_tick(broadcast.id, now + timedelta(seconds=wait))
        db.session.commit()
        return Tick("waiting_hours", next_in=wait)
    accounts = broadcast_accounts(broadcast.id)
    waiting = accounts_with_pending(broadcast.id)
    reason = stop_reason([a for a in accounts if a.id in waiting], now)
    if reason:
        _pause(broadcast, reason)
        db.session.commit()
        return Tick(BroadcastStatus.PAUSED.value)
    released = skipped = 0
    for account in accounts:
        if not account.is_usable or (account.paused_until and account.paused_until > now):
            continue
        room = in_flight_cap(account) - in_flight(broadcast.id, account.id)
        if room <= 0:
            continue
        try:
            done, passed = release(broadcast, account, room)
        except DomainError as error:  # e.g. the template was deleted from the number meanwhile
            db.session.rollback()
            _pause(broadcast, error.message)
            db.session.commit()
            return Tick(BroadcastStatus.PAUSED.value, released, skipped)
        released, skipped = released + done, skipped + passed
    db.session.expire(broadcast)
    if released == 0 and _finished(broadcast.id):
        broadcast.status = BroadcastStatus.DONE.value
        broadcast.finished_at = now
        _announce(broadcast)
        db.session.commit()
        log.info("broadcast %s done", broadcast.id)
        return Tick(BroadcastStatus.DONE.value, released, skipped)
    publish_after_commit(broadcast.workspace_id, {"type": "broadcast.progress", "broadcast_id": broadcast.id})
    db.session.commit()
    # The next tick is due a TICK after this one *started*, not after it ended: on a busy 2-core
    # machine releasing 160 messages takes 1.3-2 s, and one more second after that, rounded up by
    # Huey's scheduler (it looks for due jobs once a second), made a cycle of 3.5 s: at most 160
    # messages per 3.5 s (46/s) for a number allowed 80/s (bench/broadcast.py; 2.9 s now, most of
    # it the tick itself and the wait behind the deliveries it just queued). A tick that overran
    # runs again at once.
    elapsed = monotonic() - started
    return Tick("running", released, skipped, next_in=max(0.0, TICK.total_seconds() - elapsed))


def _start(broadcast: Broadcast, now: datetime) -> None:
    started = db.session.execute(
        update(Broadcast)
        .where(Broadcast.id == broadcast.id, Broadcast.status == BroadcastStatus.SCHEDULED.value)
        .values(status=BroadcastStatus.RUNNING.value, started_at=now, next_tick_at=now)
    ).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    db.session.refresh(broadcast)
    if started:
        _announce(broadcast)
        db.session.commit()


def _take_tick(broadcast_id: int, now: datetime) -> bool:
    """Claim this tick: only one chain of ticks per broadcast survives (a lost job's replacement
    and the original don't both keep ticking). Committed at once, so no lock is held."""
    slack = TICK / 2
    taken = db.session.execute(
        update(Broadcast)
        .where(
            Broadcast.id == broadcast_id,
            Broadcast.status == BroadcastStatus.RUNNING.value,
            (Broadcast.next_tick_at.is_(None)) | (Broadcast.next_tick_at <= now + slack),
        )
        .values(next_tick_at=now + TICK)
    ).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    return bool(taken)


def _set_next_tick(broadcast_id: int, at: datetime) -> None:
    db.session.execute(update(Broadcast).where(Broadcast.id == broadcast_id).values(next_tick_at=at))


def _parse(hhmm: str) -> time:
    hours, minutes = hhmm.split(":")
    return time(int(hours), int(minutes))


def outside_hours(send_from: str | None, send_until: str | None, tz: str, now: datetime) -> float:
    """Seconds until the sending hours open (0 when inside them or when there are none)."""
    if not send_from or not send_until:
        return 0.0
    local = now.astimezone(ZoneInfo(tz))
    start, end = _parse(send_from), _parse(send_until)
    t = local.time()
    inside = (start <= t < end) if start < end else (t >= start or t < end)
    if inside:
        return 0.0
    opens = datetime.combine(local.date(), start, tzinfo=local.tzinfo)
    if opens <= local:
        opens = datetime.combine(local.date() + timedelta(days=1), start, tzinfo=local.tzinfo)
    return max(1.0, (opens - local).total_seconds())


def stop_reason(accounts: list[WhatsAppAccount], now: datetime) -> str | None:
    """Why the broadcast must stop: a number blocked, logged out, or told to wait a long time
    (a spam limit, 131048). None while every number can go on. Written in the workspace's
    language and time zone: it is stored on the broadcast, and a worker has no reader's locale."""
    if not accounts:
        return None
    workspace = db.session.get(Workspace, accounts[0].workspace_id)
    locale = workspace.locale if workspace else "en"
    with force_locale(locale):
        for account in accounts:
            if account.status != "active":
                return _("The number %(name)s was switched off.", name=account.name)
            health = account.health_enum
            detail = account.health_reason or ""
            if health is Health.BLOCKED:
                return _("The number %(name)s was blocked: %(detail)s", name=account.name, detail=detail)
            if health is Health.LOGGED_OUT:
                return _("The number %(name)s is logged out: %(detail)s", name=account.name, detail=detail)
            if account.paused_until and account.paused_until > now + LONG_PAUSE:
                until = format_datetime(
                    account.paused_until,
                    "short",
                    tzinfo=ZoneInfo(workspace.timezone if workspace else "UTC"),
                    locale=locale,
                )
                return _(
                    "The number %(name)s was told to slow down until %(until)s: %(detail)s",
                    name=account.name, until=until, detail=detail,
                )  # fmt: skip
    return None


def accounts_with_pending(broadcast_id: int) -> set[int]:
    """The numbers that still have recipients of this broadcast to send to."""
    return set(
        db.session.scalars(
            select(BroadcastRecipient.account_id)
            .where(
                BroadcastRecipient.broadcast_id == broadcast_id,
                BroadcastRecipient.state == RecipientState.PENDING.value,
            )
            .distinct()
        )
    )


def in_flight_cap(account: WhatsAppAccount) -> int:
    """How many of a broadcast's messages a number may have waiting in the outbox: about
    ``AHEAD`` seconds of its sending rate, at least one."""
    windows = pacing.limits_for(account)
    if not windows:
        return 100
    return max(1, min(math.ceil(limit * AHEAD / window) for window, limit in windows))


def _in_flight_query(broadcast_id: int) -> Any:
    return (
        select(func.count())
        .select_from(Outbox)
        .join(BroadcastRecipient, BroadcastRecipient.message_id == Outbox.message_id)
        .where(
            Outbox.state.in_([OutboxState.QUEUED.value, OutboxState.SENDING.value]),
            BroadcastRecipient.broadcast_id == broadcast_id,
        )
    )


def in_flight(broadcast_id: int, account_id: int) -> int:
    query = _in_flight_query(broadcast_id).where(BroadcastRecipient.account_id == account_id)
    return db.session.scalar(query) or 0


def _finished(broadcast_id: int) -> bool:
    pending = db.session.scalar(
        select(BroadcastRecipient.id)
        .where(
            BroadcastRecipient.broadcast_id == broadcast_id,
            BroadcastRecipient.state == RecipientState.PENDING.value,
        )
        .limit(1)
    )
    return pending is None and not (db.session.scalar(_in_flight_query(broadcast_id)) or 0)


# --- at send time ------------------------------------------------------------------------------


def held_back(outbox_id: int, message_id: int) -> bool:
    """Called by the sender for a broadcast's message it just claimed: when the broadcast is no
    longer running the message is taken back (its recipient waits again, or is skipped after a
    cancel) and nothing is sent."""
    status = db.session.scalar(
        select(Broadcast.status)
        .join(BroadcastRecipient, BroadcastRecipient.broadcast_id == Broadcast.id)
        .where(BroadcastRecipient.message_id == message_id)
    )
    if status is None or status == BroadcastStatus.RUNNING.value:
        return False
    hold_back(outbox_id, message_id, status)
    return True


def hold_back(outbox_id: int, message_id: int, status: str) -> None:
    """Take back a claimed message of a broadcast that is ``status`` (paused or cancelled), and
    commit."""
    db.session.execute(delete(Outbox).where(Outbox.id == outbox_id))
    _back_to_waiting([message_id], skip=status == BroadcastStatus.CANCELLED.value)
    db.session.commit()
    session = db.session()
    for model, key in ((Outbox, outbox_id), (Message, message_id)):
        gone = session.identity_map.get(session.identity_key(model, key))
        if gone is not None:  # their rows are gone: nothing may refresh them in this session
            session.expunge(gone)
    log.info("outbox %s held back: its broadcast is %s", outbox_id, status)
