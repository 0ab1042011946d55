"""Routing: sticky conversations, preferred numbers, percentage splits, fallbacks."""

from __future__ import annotations

import pytest

from crm.extensions import db
from crm.whatsapp.accounts import create_account
from crm.whatsapp.models import WhatsAppAccount
from crm.whatsapp.routing import NoAccountAvailable, account_for_new_lead, carrier_for
from tests import factories


def numbers(owner: factories.Person, *specs: tuple[str, int, int]) -> list[WhatsAppAccount]:
    made = []
    for name, priority, weight in specs:
        account = create_account(owner.workspace_id, provider="sandbox", name=name, priority=priority)
        account.weight = weight
        made.append(account)
    db.session.commit()
    return made


def test_percentage_split_between_equal_numbers_is_stable(owner: factories.Person) -> None:
    cloud, webqr = numbers(owner, ("cloud", 0, 70), ("webqr", 0, 30))
    picks = [account_for_new_lead(owner.workspace_id, lead_id).id for lead_id in range(1, 2001)]
    share = picks.count(cloud.id) / len(picks)
    assert 0.65 < share < 0.75
    assert [account_for_new_lead(owner.workspace_id, lead_id).id for lead_id in range(1, 2001)] == picks
    assert webqr.id in picks


def test_preferred_numbers_first_and_unusable_ones_skipped(owner: factories.Person) -> None:
    primary, backup = numbers(owner, ("primary", 0, 100), ("backup", 1, 100))
    assert account_for_new_lead(owner.workspace_id, 1).id == primary.id
    primary.health = "logged_out"
    db.session.commit()
    assert account_for_new_lead(owner.workspace_id, 1).id == backup.id
    backup.status = "disabled"
    db.session.commit()
    with pytest.raises(NoAccountAvailable):
        account_for_new_lead(owner.workspace_id, 1)


def test_fallback_chain_never_crosses_workspaces(owner: factories.Person) -> None:
    (mine,) = numbers(owner, ("mine", 0, 100))
    other = factories.person("Other", "o@other.example", role="owner")
    theirs = create_account(other.workspace_id, provider="sandbox", name="theirs")
    mine.health, mine.fallback_account_id = "blocked", theirs.id
    db.session.commit()
    assert carrier_for(mine) is None


def test_fallback_carries_while_the_primary_is_down(owner: factories.Person) -> None:
    primary, backup = numbers(owner, ("primary", 0, 100), ("backup", 1, 100))
    primary.fallback_account_id = backup.id
    db.session.commit()
    assert carrier_for(primary) is primary
    primary.health = "blocked"
    db.session.commit()
    assert carrier_for(primary) is backup
