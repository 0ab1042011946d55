"""Fixtures for broadcasts: opted-in leads in bulk, a fake clock, and a driver that plays the
worker (dispatcher ticks and due sends) so a test sees a whole broadcast run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine
from sqlalchemy import insert, select

from crm.broadcasts.dispatch import Tick, dispatch
from crm.db import utcnow
from crm.extensions import db
from crm.leads.models import Lead, LeadTag
from crm.whatsapp.models import Outbox, OutboxState
from crm.whatsapp.outbox import deliver_outbound
from tests import factories
from tests.whatsapp.conftest import (  # noqa: F401  (fixtures)
    api,
    cloud_account,
    graph,
    graph_api,
    sandbox_account,
    token,
)


def add_leads(
    person: factories.Person,
    n: int,
    *,
    tags: tuple[str, ...] = (),
    opt_in: bool = True,
    start: int = 0,
    **fields: Any,
) -> list[int]:
    """``n`` leads with phones +55119000xxxxx, written in bulk (as an import leaves them)."""
    now = utcnow()
    rows = [
        {
            "workspace_id": person.workspace_id,
            "phone": f"+55119{start + i:08d}",
            "name": f"Lead {start + i}",
            "opt_in": opt_in,
            "opted_in_at": now if opt_in else None,
            "source": "import",
            "kind": "person",
            "notes": "",
            "created_at": now,
            "updated_at": now,
            **fields,
        }
        for i in range(n)
    ]
    ids = list(db.session.scalars(insert(Lead).returning(Lead.id), rows))
    if tags:
        db.session.execute(
            insert(LeadTag),
            [
                {"workspace_id": person.workspace_id, "lead_id": lead_id, "name": tag, "key": tag.casefold()}
                for lead_id in ids
                for tag in tags
            ],
        )
    db.session.commit()
    return ids


@contextmanager
def tasks_held() -> Iterator[None]:
    """Tasks asked for inside are not run inline (nor anywhere): the test moves things by hand,
    as workers would later."""
    from crm.worker import huey

    huey.immediate = False
    try:
        yield
    finally:
        huey.immediate = True


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    """Time stands still until the test moves it with ``clock.shift(seconds)``."""
    with time_machine.travel(datetime.now(UTC).replace(microsecond=0), tick=False) as traveller:
        yield traveller


def deliver_due() -> list[str]:
    """Send every outbox row that is due now, as the worker would."""
    due = db.session.scalars(
        select(Outbox.id).where(Outbox.state == OutboxState.QUEUED.value, Outbox.next_attempt_at <= utcnow())
    ).all()
    return [deliver_outbound(outbox_id) for outbox_id in due]


def drive(
    broadcast_id: int, clock: time_machine.Traveller | None = None, *, step: float = 1.0, ticks: int = 2000
) -> Tick:
    """Tick the broadcast and send what is due until it stops running (moving the fake clock)."""
    tick = Tick("running")
    for _ in range(ticks):
        tick = dispatch(broadcast_id)
        deliver_due()
        if tick.status not in ("running", "waiting_hours", "scheduled"):
            return tick
        if clock is None:
            raise AssertionError("a broadcast still running needs a clock to move")
        clock.shift(max(step, tick.next_in or step) if tick.status != "running" else step)
    return tick
