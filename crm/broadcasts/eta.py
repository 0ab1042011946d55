"""When a broadcast will be done, from its numbers' pacing: an estimate people can plan around.

Each recipient is carried by one number (chosen when the broadcast was created), so each number
works through its own queue at its own rate, and the broadcast ends when the slowest one does.
A number's rate is what its limiter allows (``pacing.limits_for``: Meta's throughput or the
number's own cap; WebQR's per-minute cap and the random gap between its sends). The clock only
runs inside the broadcast's sending hours and, for WebQR numbers, outside their quiet hours and
within their daily cap, so a broadcast that has to wait for tomorrow says so instead of promising
the impossible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from crm.broadcasts.dispatch import AHEAD, in_flight_cap
from crm.broadcasts.models import Broadcast, BroadcastRecipient
from crm.broadcasts.services import broadcast_accounts, recipient_outcome
from crm.extensions import db
from crm.inbox.models import Message
from crm.whatsapp import pacing
from crm.whatsapp.models import WebQRSession, WhatsAppAccount

DAY = 24 * 60  # minutes
MAX_DAYS = 366  # further than this is "more than a year", not a date

Intervals = list[tuple[int, int]]  # [start, end) in minutes of the local day


@dataclass(frozen=True)
class WebQRLimits:
    """What slows a WebQR number down beyond its per-minute rate (shown with the estimate)."""

    name: str
    daily_cap: int
    quiet: tuple[str, str] | None


@dataclass(frozen=True)
class Estimate:
    finish_at: datetime | None  # None: it can't be told (a number can't send, or over a year)
    per_minute: float  # every number together, while they all send
    hours: tuple[str, str] | None  # the broadcast's own sending hours
    webqr: list[WebQRLimits] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)  # numbers with recipients that can't send now


def queued_by_number(broadcast_id: int) -> dict[int, int]:
    """How many recipients still wait, per number."""
    outcome = recipient_outcome()
    rows = db.session.execute(
        select(BroadcastRecipient.account_id, func.count())
        .select_from(BroadcastRecipient)
        .outerjoin(Message, Message.id == BroadcastRecipient.message_id)
        .where(BroadcastRecipient.broadcast_id == broadcast_id, outcome == "queued")
        .group_by(BroadcastRecipient.account_id)
    ).all()
    return {account_id: n for account_id, n in rows}


def per_second(account: WhatsAppAccount) -> float:
    """The most this number sends per second, sustained."""
    windows = pacing.limits_for(account)
    rate = min(limit / window for window, limit in windows) if windows else in_flight_cap(account) / AHEAD
    if account.provider == "webqr":
        from crm.whatsapp.webqr_pacing import WebQRPacing

        settings = WebQRPacing.of(account)
        gap = (settings.jitter_min + max(settings.jitter_min, settings.jitter_max)) / 2
        if gap > 0:
            rate = min(rate, 1 / gap)
    return max(rate, 1e-6)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def between(start: str, end: str) -> Intervals:
    """The minutes from ``start`` until ``end`` (crossing midnight when end comes first)."""
    a, b = _minutes(start), _minutes(end)
    if a == b:
        return [(0, DAY)]
    return [(a, b)] if a < b else [(0, b), (a, DAY)]


def outside(start: str, end: str) -> Intervals:
    """Every minute of the day except those from ``start`` until ``end``."""
    a, b = _minutes(start), _minutes(end)
    if a == b:
        return [(0, DAY)]
    return [(0, a), (b, DAY)] if a < b else [(b, a)]


def intersect(xs: Intervals, ys: Intervals) -> Intervals:
    found = [(max(a, c), min(b, d)) for a, b in xs for c, d in ys]
    return sorted((a, b) for a, b in found if a < b)


def _no_cap(_day: int, _midnight: datetime) -> int | None:
    return None


def finish_time(
    n: int,
    rate: float,
    start: datetime,
    zone: ZoneInfo,
    allowed: Intervals,
    budget_for: Callable[[int, datetime], int | None] = _no_cap,
) -> datetime | None:
    """When ``n`` messages sent at ``rate`` per second from ``start`` are done, sending only in the
    ``allowed`` minutes of each local day and at most ``budget_for(day, midnight)`` a day (None: no
    cap). None past ``MAX_DAYS``."""
    remaining = float(n)
    if remaining <= 0:
        return start
    first_day = start.astimezone(zone).date()
    for offset in range(MAX_DAYS):
        midnight = datetime.combine(first_day + timedelta(days=offset), time(0), tzinfo=zone)
        budget = budget_for(offset, midnight)
        for a, b in allowed:
            # Wall-clock minutes of this day, compared as instants (UTC) across DST changes.
            begin = max((midnight + timedelta(minutes=a)).astimezone(UTC), start)
            end = (midnight + timedelta(minutes=b)).astimezone(UTC)
            if end <= begin:
                continue
            capacity = (end - begin).total_seconds() * rate
            if budget is not None:
                capacity = min(capacity, float(budget))
            if capacity <= 0:
                continue
            if remaining <= capacity:
                return begin + timedelta(seconds=remaining / rate)
            remaining -= capacity
            if budget is not None:
                budget = int(budget - capacity)
    return None


def _webqr_budget(account: WhatsAppAccount, zone: ZoneInfo, now: datetime) -> Callable[[int, datetime], int]:
    """A WebQR number's sends left on each day: its (warming up) daily cap, less today's sends."""
    from crm.whatsapp.webqr_pacing import WebQRPacing, cap_for_day, sent_since

    settings = WebQRPacing.of(account)
    paired_at = db.session.scalar(select(WebQRSession.paired_at).where(WebQRSession.account_id == account.id))
    today = datetime.combine(now.astimezone(zone).date(), time(0), tzinfo=zone)
    sent_today = sent_since(account.id, today)

    def budget(offset: int, midnight: datetime) -> int:
        cap = cap_for_day(settings, paired_at, (midnight + timedelta(hours=12)).astimezone(UTC))
        return max(0, cap - (sent_today if offset == 0 else 0))

    return budget


def estimate(broadcast: Broadcast, tz: str, now: datetime) -> Estimate:
    """The estimated finish of a running or scheduled broadcast."""
    zone = ZoneInfo(tz)
    waiting = queued_by_number(broadcast.id)
    hours = (
        (broadcast.send_from, broadcast.send_until) if broadcast.send_from and broadcast.send_until else None
    )
    base: Intervals = between(*hours) if hours else [(0, DAY)]
    start = max(now, broadcast.scheduled_at) if broadcast.scheduled_at else now
    finish: datetime | None = start
    per_minute = 0.0
    webqr: list[WebQRLimits] = []
    stuck: list[str] = []
    for account in broadcast_accounts(broadcast.id):
        n = waiting.get(account.id, 0)
        if not n:
            continue
        if not account.is_usable:
            stuck.append(account.name)
            finish = None
            continue
        rate = per_second(account)
        per_minute += rate * 60
        allowed, budget_for = base, None
        if account.provider == "webqr":
            from crm.whatsapp.webqr_pacing import WebQRPacing

            settings = WebQRPacing.of(account)
            quiet = (settings.quiet_start, settings.quiet_end) if settings.quiet_hours else None
            if quiet:
                allowed = intersect(base, outside(*quiet))
            budget_for = _webqr_budget(account, zone, now)
            webqr.append(WebQRLimits(account.name, settings.daily_cap, quiet))
        begins = max(start, account.paused_until) if account.paused_until else start
        done = finish_time(n, rate, begins, zone, allowed, budget_for or _no_cap)
        finish = None if done is None or finish is None else max(finish, done)
    return Estimate(finish, per_minute, hours, webqr, stuck)
