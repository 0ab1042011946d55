"""The per-number rate limiter: never more than allowed over any 1 s or 60 s window."""

from __future__ import annotations

import pytest
from flask import Flask

from crm.whatsapp import pacing
from crm.whatsapp.accounts import create_account
from crm.whatsapp.models import WhatsAppAccount
from tests import factories


@pytest.fixture
def capped(owner: factories.Person) -> WhatsAppAccount:
    return create_account(owner.workspace_id, provider="sandbox", name="Capped", max_per_minute=3)


def test_sandbox_without_a_cap_is_unlimited(owner: factories.Person) -> None:
    account = create_account(owner.workspace_id, provider="sandbox", name="Free")
    assert pacing.limits_for(account) == []
    assert all(pacing.reserve(account) == 0 for _ in range(500))


def test_per_minute_cap_holds_and_says_how_long_to_wait(capped: WhatsAppAccount) -> None:
    assert [pacing.reserve(capped) for _ in range(3)] == [0, 0, 0]
    wait = pacing.reserve(capped)
    assert 59 < wait <= 60


def test_cloud_defaults_to_80_per_second_and_a_cap_adds_a_minute_window(
    owner: factories.Person, app: Flask
) -> None:
    from crm.whatsapp.accounts import CloudSettings

    settings = CloudSettings(phone_number_id="1", access_token="t", app_secret="s", verify_token="v")
    plain = create_account(owner.workspace_id, provider="cloud", name="C", cloud=settings)
    assert pacing.limits_for(plain) == [(1.0, 80)]
    granted = sum(1 for _ in range(100) if pacing.reserve(plain) == 0)
    assert granted == 80
    capped = create_account(
        owner.workspace_id, provider="cloud", name="D", cloud=settings, max_per_minute=600
    )
    assert pacing.limits_for(capped) == [(1.0, 80), (60.0, 600)]


def test_webqr_is_conservative_by_default(owner: factories.Person) -> None:
    account = create_account(owner.workspace_id, provider="webqr", name="Phone")
    assert pacing.limits_for(account) == [(60.0, 10)]
    lower = create_account(owner.workspace_id, provider="webqr", name="Slower", max_per_minute=4)
    assert pacing.limits_for(lower) == [(60.0, 4)]


def test_numbers_do_not_share_a_window(owner: factories.Person, capped: WhatsAppAccount) -> None:
    other = create_account(owner.workspace_id, provider="sandbox", name="Other", max_per_minute=3)
    for _ in range(3):
        pacing.reserve(capped)
    assert pacing.reserve(other) == 0
