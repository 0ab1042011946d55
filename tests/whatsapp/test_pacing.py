"""The per-number rate limiter: never more than allowed over any 1 s or 60 s window."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select, update

from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Conversation
from crm.whatsapp import pacing
from crm.whatsapp.accounts import create_account
from crm.whatsapp.models import Outbox, WhatsAppAccount
from tests import factories
from tests.fakes.graph_api import GraphEmulator
from tests.whatsapp.conftest import make_cloud_account


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


# --- the slot is in flight from the request to its answer (``restamp``, ``settle``) ------------


@pytest.fixture
def cloud(owner: factories.Person) -> WhatsAppAccount:
    from crm.whatsapp.accounts import CloudSettings

    settings = CloudSettings(phone_number_id="1", access_token="t", app_secret="s", verify_token="v")
    return create_account(owner.workspace_id, provider="cloud", name="C", cloud=settings)


def test_a_slot_is_held_until_a_whole_window_after_its_answer(cloud: WhatsAppAccount) -> None:
    with time_machine.travel(datetime.now(UTC), tick=False) as clock:
        assert [pacing.reserve(cloud) for _ in range(80)] == [0.0] * 80
        clock.shift(0.5)  # the last sender's commit took half a second: its request leaves only now
        assert pacing.restamp(cloud) == 0
        clock.shift(0.6)  # the other 79 slots have run out; the one in flight has not
        assert sum(1 for _ in range(100) if pacing.reserve(cloud) == 0) == 79
        clock.shift(0.2)  # the answer comes back: Meta counted the send at some moment before now
        pacing.settle(cloud)
        clock.shift(1.0 - 0.001)  # the 79 of the last step have run out, the settled one not yet
        assert sum(1 for _ in range(100) if pacing.reserve(cloud) == 0) == 79
        assert pacing.reserve(cloud) == pytest.approx(0.001, abs=1e-6)


def test_a_request_that_never_answers_frees_its_slot_after_the_flight_guard(cloud: WhatsAppAccount) -> None:
    with time_machine.travel(datetime.now(UTC), tick=False) as clock:
        for _ in range(80):  # every sender killed mid-request
            assert pacing.reserve(cloud) == 0 and pacing.restamp(cloud) == 0
        assert pacing.reserve(cloud) == pacing.IN_FLIGHT_RECHECK  # all in flight: look again shortly
        clock.shift(pacing.FLIGHT_GUARD + 1.0 - 0.01)  # counted as if answered at the guard's end
        assert pacing.reserve(cloud) == pytest.approx(0.01, abs=1e-6)
        clock.shift(0.02)
        assert [pacing.reserve(cloud) for _ in range(80)] == [0.0] * 80


def test_settle_without_a_slot_in_flight_changes_nothing(cloud: WhatsAppAccount) -> None:
    assert pacing.reserve(cloud) == 0
    pacing.settle(cloud)  # reserved, never put in flight: nothing to settle, nothing added
    assert sum(1 for _ in range(100) if pacing.reserve(cloud) == 0) == 79


def test_a_slot_that_ran_out_before_the_request_is_taken_again_only_if_one_is_free(
    app: Flask, cloud: WhatsAppAccount
) -> None:
    held = 1.0
    with time_machine.travel(datetime.now(UTC), tick=False) as clock:
        assert pacing.reserve(cloud) == 0
        clock.shift(held + 0.1)  # a very slow commit: the slot ran out before the request left

        def others() -> None:  # other senders fill the window meanwhile
            with app.app_context():
                assert [pacing.reserve(cloud) for _ in range(80)] == [0.0] * 80

        worker = threading.Thread(target=others)
        worker.start()
        worker.join()
        assert pacing.restamp(cloud) == pytest.approx(held)  # never an 81st: wait for a free slot
        clock.shift(held)
        assert pacing.reserve(cloud) == 0  # they ran out, and nothing of the first slot was left behind


@pytest.fixture
def queued_send(
    owner: factories.Person, graph_api: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> tuple[WhatsAppAccount, int]:
    """A Cloud number and one outbox row waiting to be sent through it (nothing sends it yet)."""
    from crm.whatsapp import outbox

    account = make_cloud_account(owner, graph_api)
    monkeypatch.setattr(outbox, "enqueue_delivery_after_commit", lambda outbox_id: None)
    conversation_id = factories.inbound(account.id, phone="+5511988887777")
    conversation = db.session.get(Conversation, conversation_id)
    assert conversation is not None
    message = outbox.queue_outbound(owner.workspace_id, conversation, text="Oi", author="api").message
    row_id = db.session.scalar(select(Outbox.id).where(Outbox.message_id == message.id))
    assert row_id is not None
    return account, row_id


def test_the_slot_is_stamped_after_the_attempt_is_committed_and_before_the_request(
    queued_send: tuple[WhatsAppAccount, int], graph_api: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm.whatsapp import outbox

    _account, row_id = queued_send
    seen: list[tuple[str, int, int]] = []
    real_restamp = pacing.restamp

    def restamp(carrier: WhatsAppAccount) -> float:
        with db.engine.connect() as other:  # what another connection sees: only what was committed
            state, attempts = other.execute(
                select(Outbox.state, Outbox.attempts).where(Outbox.id == row_id)
            ).one()
        seen.append((state, attempts, len(graph_api.sent)))
        return real_restamp(carrier)

    monkeypatch.setattr(pacing, "restamp", restamp)
    assert outbox.deliver_outbound(row_id) == "sent"
    assert seen == [("sending", 1, 0)] and len(graph_api.sent) == 1


@pytest.mark.parametrize(("fail_with", "outcome"), [(None, "sent"), (131026, "failed"), (131000, "retry")])
def test_the_slot_is_settled_once_the_provider_has_answered_whatever_the_answer(
    queued_send: tuple[WhatsAppAccount, int],
    graph_api: GraphEmulator,
    monkeypatch: pytest.MonkeyPatch,
    fail_with: int | None,
    outcome: str,
) -> None:
    from crm.whatsapp import outbox

    account, row_id = queued_send
    if fail_with is not None:
        graph_api.fail_next(fail_with)
    calls: list[str] = []
    real_restamp, real_settle = pacing.restamp, pacing.settle

    def restamp(carrier: WhatsAppAccount) -> float:
        calls.append(f"restamp after {len(graph_api.requests)} requests")
        return real_restamp(carrier)

    def settle(carrier: WhatsAppAccount) -> None:
        calls.append(f"settle after {len(graph_api.requests)} requests")
        real_settle(carrier)

    monkeypatch.setattr(pacing, "restamp", restamp)
    monkeypatch.setattr(pacing, "settle", settle)
    assert outbox.deliver_outbound(row_id) == outcome
    assert calls == ["restamp after 0 requests", "settle after 1 requests"]
    # counted from the answer: the other 79 slots are free, this one is not
    assert sum(1 for _ in range(100) if pacing.reserve(account) == 0) == 79


def test_a_queue_task_waits_in_place_for_the_next_slot_holding_nothing(
    queued_send: tuple[WhatsAppAccount, int], graph_api: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm.whatsapp import outbox

    account, row_id = queued_send
    assert [pacing.reserve(account) for _ in range(80)] == [0.0] * 80  # the window is full for 1 s
    seen: list[str] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        with db.engine.connect() as other:  # what another sender sees while this one waits
            seen.append(other.execute(select(Outbox.state).where(Outbox.id == row_id)).scalar_one())
        real_sleep(seconds)

    monkeypatch.setattr(outbox.time, "sleep", sleep)
    started = time.monotonic()
    assert outbox.deliver_outbound(row_id, wait_for_slot=2.0) == "sent"
    assert time.monotonic() - started >= 0.9  # it did wait for the window
    assert seen and set(seen) == {"queued"}  # the claim was let go meanwhile: nothing committed or held
    row = db.session.get(Outbox, row_id)
    assert row is not None and row.state == "sent" and row.attempts == 1 and len(graph_api.sent) == 1


def test_a_longer_wait_than_the_task_may_spend_schedules_the_row_again(
    queued_send: tuple[WhatsAppAccount, int], graph_api: GraphEmulator
) -> None:
    from crm.whatsapp import outbox

    account, row_id = queued_send
    assert [pacing.reserve(account) for _ in range(80)] == [0.0] * 80
    before = utcnow()
    assert outbox.deliver_outbound(row_id, wait_for_slot=0.2) == "paced"
    row = db.session.get(Outbox, row_id)
    assert row is not None and row.state == "queued" and row.attempts == 0 and graph_api.sent == []
    assert row.next_attempt_at >= before + timedelta(seconds=0.8)


def test_no_free_slot_when_the_request_would_leave_waits_without_counting_an_attempt(
    queued_send: tuple[WhatsAppAccount, int], graph_api: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm.whatsapp import outbox

    row = db.session.get(Outbox, queued_send[1])
    assert row is not None
    monkeypatch.setattr(pacing, "restamp", lambda carrier: 0.7)
    before = utcnow()
    assert outbox.deliver_outbound(row.id) == "paced"
    assert graph_api.sent == []
    assert row.state == "queued" and row.attempts == 0 and row.lease_until is None
    assert row.next_attempt_at >= before + timedelta(seconds=0.7)

    def unreachable(carrier: WhatsAppAccount) -> float:
        raise ConnectionError("Redis went away")

    # The pacing store unreachable when the slot is taken, or when it goes in flight: nothing
    # sent, no attempt used up, tried again.
    for step in ("reserve", "restamp"):
        monkeypatch.undo()
        monkeypatch.setattr(pacing, step, unreachable)
        db.session.execute(update(Outbox).where(Outbox.id == row.id).values(next_attempt_at=utcnow()))
        db.session.commit()
        before = utcnow()
        assert outbox.deliver_outbound(row.id) == "paced"
        db.session.refresh(row)
        assert graph_api.sent == [] and row.state == "queued" and row.attempts == 0
        assert row.next_attempt_at >= before + timedelta(seconds=outbox.RESTAMP_RETRY)
