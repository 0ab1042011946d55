"""Ban-risk pacing with a fake clock: never above the rate, jitter present, warm-up, caps, quiet hours."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from crm.extensions import db
from crm.whatsapp import pacing, webqr
from crm.whatsapp.accounts import create_account
from crm.whatsapp.models import WhatsAppAccount
from crm.whatsapp.webqr_pacing import WebQRPacing, cap_for_day, quiet_until, wait_before_next
from tests import factories

TZ = "America/Sao_Paulo"
NOON = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # 12:00 in São Paulo


def webqr_number(owner: factories.Person, **pacing_values: object) -> WhatsAppAccount:
    account = create_account(owner.workspace_id, provider="webqr", name="Phone")
    if pacing_values:
        webqr.save_pacing(owner.workspace_id, account.id, {**WebQRPacing().as_dict(), **pacing_values})
    db.session.refresh(account)
    return account


def test_defaults_are_conservative(owner: factories.Person) -> None:
    p = WebQRPacing.of(webqr_number(owner))
    assert (p.per_minute, p.daily_cap, p.warmup_days, p.quiet_hours) == (10, 300, 7, True)
    assert p.jitter_min > 0 and p.jitter_max > p.jitter_min


def test_jitter_spreads_sends_and_is_random(owner: factories.Person) -> None:
    account = webqr_number(owner, jitter_min=4, jitter_max=12, quiet_hours=False)
    rng = random.Random(7)
    waits = {round(wait_before_next(account, TZ, NOON, NOON, None, rng), 3) for _ in range(50)}
    assert all(4 <= w <= 12 for w in waits) and len(waits) > 40  # a different gap every time
    assert wait_before_next(account, TZ, NOON, NOON - timedelta(seconds=13), None, rng) == 0


def test_quiet_hours_cross_midnight_in_the_workspace_zone(owner: factories.Person) -> None:
    p = WebQRPacing(quiet_start="21:00", quiet_end="08:00")
    late = datetime(2026, 11, 26, 1, 30, tzinfo=UTC)  # 22:30 in São Paulo
    until = quiet_until(p, late, TZ)
    assert until == datetime(2026, 11, 26, 11, 0, tzinfo=UTC)  # 08:00 local
    assert quiet_until(p, NOON, TZ) is None
    account = webqr_number(owner)
    assert wait_before_next(account, TZ, late, None, None) == (until - late).total_seconds()


def test_warm_up_ramp_and_daily_cap(owner: factories.Person) -> None:
    p = WebQRPacing(daily_cap=300, warmup_start=20, warmup_days=7)
    paired = NOON - timedelta(hours=1)
    caps = [cap_for_day(p, paired, paired + timedelta(days=d)) for d in range(9)]
    assert caps[0] == 20 and caps[-1] == 300 and caps == sorted(caps)
    account = webqr_number(
        owner, warmup_start=2, warmup_days=7, quiet_hours=False, jitter_min=0, jitter_max=0
    )
    conversation_id = factories.inbound(account.id)
    for i in range(2):
        factories.stored_message(
            conversation_id,
            f"m{i}",
            direction="out",
            provider="webqr",
            provider_message_id=f"id{i}",
            author="broadcast",
            created_at=NOON - timedelta(minutes=i),
        )
    wait = wait_before_next(account, TZ, NOON, None, paired_at=NOON - timedelta(hours=2))
    assert wait > 3600 * 8  # today's warm-up cap is used up: wait for tomorrow in São Paulo


def test_the_minute_window_never_exceeds_the_rate(owner: factories.Person) -> None:
    account = webqr_number(owner, per_minute=4)
    assert pacing.limits_for(account) == [(60.0, 4)]
    granted = [pacing.reserve(account) == 0 for _ in range(10)]
    assert granted.count(True) == 4


def test_bad_pacing_values_change_nothing(owner: factories.Person) -> None:
    import pytest

    from crm.errors import ValidationFailed

    account = webqr_number(owner)
    for bad in (
        {"per_minute": 0},
        {"jitter_min": 9, "jitter_max": 3},
        {"quiet_start": "25:99"},
        {"warmup_start": 1000, "daily_cap": 10},
    ):
        with pytest.raises(ValidationFailed):
            webqr.save_pacing(owner.workspace_id, account.id, {**WebQRPacing().as_dict(), **bad})
    db.session.refresh(account)
    assert "pacing" not in (account.settings or {})
