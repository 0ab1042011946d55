"""Ban-risk protection for WebQR numbers: look like a person, not a robot.

On top of the per-minute window (``pacing.reserve``), a WebQR number waits a random gap between
sends, warms up slowly after pairing (a daily cap that grows over the first week), never exceeds
its daily cap, and stays quiet at night in the workspace's time zone. Every value is per number
(``settings["pacing"]``), with the defaults below explained on the settings page.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from crm.extensions import db
from crm.inbox.models import Message
from crm.whatsapp.models import WhatsAppAccount


@dataclass(frozen=True)
class WebQRPacing:
    per_minute: int = 10
    jitter_min: float = 4.0  # seconds between two sends, at least…
    jitter_max: float = 12.0  # …and at most (random in between)
    daily_cap: int = 300
    warmup_days: int = 7  # after pairing, the daily cap grows from warmup_start to daily_cap
    warmup_start: int = 20
    quiet_hours: bool = True
    quiet_start: str = "21:00"  # local time of the workspace
    quiet_end: str = "08:00"

    @classmethod
    def of(cls, account: WhatsAppAccount) -> WebQRPacing:
        raw = (account.settings or {}).get("pacing") or {}
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        pacing = cls(**values)
        if account.max_per_minute:
            pacing = cls(**{**asdict(pacing), "per_minute": min(pacing.per_minute, account.max_per_minute)})
        return pacing

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cap_for_day(pacing: WebQRPacing, paired_at: datetime | None, now: datetime) -> int:
    """Today's cap: ``warmup_start`` on the pairing day, growing linearly to ``daily_cap``."""
    if paired_at is None or pacing.warmup_days <= 0:
        return pacing.daily_cap
    day = max(0, (now - paired_at).days)
    if day >= pacing.warmup_days:
        return pacing.daily_cap
    step = (pacing.daily_cap - pacing.warmup_start) / pacing.warmup_days
    return min(pacing.daily_cap, int(pacing.warmup_start + step * day))


def _parse(hhmm: str) -> time:
    hours, minutes = hhmm.split(":")
    return time(int(hours), int(minutes))


def quiet_until(pacing: WebQRPacing, now: datetime, tz: str) -> datetime | None:
    """The end of the quiet period if ``now`` is inside it (windows may cross midnight)."""
    if not pacing.quiet_hours:
        return None
    local = now.astimezone(ZoneInfo(tz))
    start, end = _parse(pacing.quiet_start), _parse(pacing.quiet_end)
    t = local.time()
    inside = (start <= t or t < end) if start > end else (start <= t < end)
    if not inside:
        return None
    end_day = local.date() if t < end else local.date() + timedelta(days=1)
    return datetime.combine(end_day, end, tzinfo=local.tzinfo).astimezone(now.tzinfo)


def sent_since(account_id: int, since: datetime) -> int:
    return (
        db.session.scalar(
            select(func.count())
            .select_from(Message)
            .where(
                Message.account_id == account_id,
                Message.direction == "out",
                Message.provider_message_id.is_not(None),
                Message.created_at >= since,
            )
        )
        or 0
    )


def wait_before_next(
    account: WhatsAppAccount,
    tz: str,
    now: datetime,
    last_send_at: datetime | None,
    paired_at: datetime | None,
    rng: random.Random | None = None,
) -> float:
    """Seconds this number must wait before its next send (0 = go now)."""
    pacing = WebQRPacing.of(account)
    quiet = quiet_until(pacing, now, tz)
    if quiet is not None:
        return (quiet - now).total_seconds()
    local_midnight = datetime.combine(now.astimezone(ZoneInfo(tz)).date(), time(0), tzinfo=ZoneInfo(tz))
    if sent_since(account.id, local_midnight) >= cap_for_day(pacing, paired_at, now):
        tomorrow = local_midnight + timedelta(days=1)
        return (tomorrow - now).total_seconds()
    if last_send_at is not None:
        gap = (rng or random).uniform(pacing.jitter_min, max(pacing.jitter_min, pacing.jitter_max))
        elapsed = (now - last_send_at).total_seconds()
        if elapsed < gap:
            return gap - elapsed
    return 0.0
