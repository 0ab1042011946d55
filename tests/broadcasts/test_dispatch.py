"""The dispatcher with a fake clock and the Graph API emulator: pacing, variants, opt-outs
mid-run, automatic pause on logout, resume, and two workers at once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlalchemy import select, update

from crm.broadcasts.dispatch import dispatch, release
from crm.broadcasts.models import Broadcast, BroadcastRecipient
from crm.broadcasts.services import Draft, as_dict, create_broadcast, resume_broadcast
from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Message
from crm.leads.models import Lead
from crm.whatsapp import pacing
from crm.whatsapp.accounts import CloudSettings, update_account
from crm.whatsapp.models import Outbox, WhatsAppAccount
from tests import factories
from tests.broadcasts.conftest import add_leads, deliver_due, drive, tasks_held
from tests.fakes.graph_api import GraphEmulator
from tests.whatsapp.conftest import ACCESS_TOKEN, make_cloud_account


def start(person: factories.Person, **draft: Any) -> int:
    return create_broadcast(
        person.workspace_id, Draft(**{"name": "Promo", "variants": ["Oi {{name}}"], **draft})
    ).id


def step(broadcast_id: int, clock: time_machine.Traveller, seconds: float = 1.0) -> str:
    status = dispatch(broadcast_id).status
    deliver_due()
    clock.shift(seconds)
    return status


def record_slots(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The (fake) moments at which the rate limiter let a send through."""
    taken: list[float] = []
    original = pacing.reserve

    def recording(account: WhatsAppAccount) -> float:
        wait = original(account)
        if wait == 0:
            taken.append(time.time())
        return wait

    monkeypatch.setattr(pacing, "reserve", recording)
    return taken


def most_in_any_window(moments: list[float], window: float) -> int:
    moments = sorted(moments)
    best, first = 0, 0
    for last, moment in enumerate(moments):
        while moments[first] <= moment - window:
            first += 1
        best = max(best, last - first + 1)
    return best


@pytest.mark.parametrize(("leads", "per_minute", "finish_by"), [(170, None, 4), (70, 30, 125)])
def test_never_faster_than_the_numbers_rate_over_any_1s_and_60s_window(
    owner: factories.Person,
    graph_api: GraphEmulator,
    clock: time_machine.Traveller,
    monkeypatch: pytest.MonkeyPatch,
    leads: int,
    per_minute: int | None,
    finish_by: float,
) -> None:
    account = make_cloud_account(owner, graph_api, max_per_minute=per_minute)
    slots = record_slots(monkeypatch)
    add_leads(owner, leads)
    began = time.time()
    broadcast_id = start(owner)
    assert drive(broadcast_id, clock, step=0.5).status == "done"
    assert len(graph_api.sent) == leads == len({m.to for m in graph_api.sent})
    assert most_in_any_window(slots, 1.0) <= 80  # the Cloud API number's throughput
    if per_minute:
        assert most_in_any_window(slots, 60.0) <= per_minute
    # Pinned at the rate, not far below it: done about when the rate allows.
    assert slots[-1] - began <= finish_by
    assert account.id


def test_variants_and_variables_with_fallbacks(
    owner: factories.Person,
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    clock: time_machine.Traveller,
) -> None:
    add_leads(owner, 20, custom_fields={"empresa": "Acme"})
    add_leads(owner, 20, start=100, name="")
    variants = [
        "Oi {{first_name|amigo}}, da {{empresa|sua empresa}}!",
        "Olá {{ name | amigo }} ({{empresa|—}})",
    ]
    broadcast_id = start(owner, variants=variants)
    assert drive(broadcast_id, clock).status == "done"
    texts = {m.to: m.text for m in graph_api.sent}
    assert len(texts) == 40
    rows = db.session.execute(
        select(BroadcastRecipient.variant, Lead.phone, Lead.name)
        .join(Lead, Lead.id == BroadcastRecipient.lead_id)
        .where(BroadcastRecipient.broadcast_id == broadcast_id)
    ).all()
    used = Counter(variant for variant, _phone, _name in rows)
    assert set(used) == {0, 1} and min(used.values()) >= 8  # both variants, picked at random
    for variant, phone, name in rows:
        named = bool(name)
        expected = (
            (f"Oi {name.split()[0]}, da Acme!" if named else "Oi amigo, da sua empresa!")
            if variant == 0
            else (f"Olá {name} (Acme)" if named else "Olá amigo (—)")
        )
        assert texts[phone.lstrip("+")] == expected


def test_opt_out_and_deletion_during_the_run_are_skipped(
    owner: factories.Person, graph_api: GraphEmulator, clock: time_machine.Traveller, api: Any
) -> None:
    account = make_cloud_account(owner, graph_api, max_per_minute=60)
    ids = add_leads(owner, 10)
    broadcast_id = start(owner)
    while len(graph_api.sent) < 3:
        step(broadcast_id, clock)
    # One of the last writes SAIR (the keyword, through the real inbound path); one is deleted.
    factories.inbound(account.id, phone="+5511900000008", text="Sair")
    assert api.client.delete(f"/api/v1/leads/{ids[9]}", headers=api.headers).status_code in (200, 204)
    assert drive(broadcast_id, clock).status == "done"
    broadcast_texts = [m for m in graph_api.sent if m.text and m.text.startswith("Oi Lead")]
    assert sorted(m.to for m in broadcast_texts) == sorted(f"55119{i:08d}" for i in range(8))
    counts = as_dict(db.session.get(Broadcast, broadcast_id))
    assert (counts["sent"] + counts["delivered"], counts["skipped"], counts["queued"]) == (8, 2, 0)


def test_logout_mid_run_pauses_and_resume_sends_only_the_rest(
    owner: factories.Person, graph_api: GraphEmulator, clock: time_machine.Traveller
) -> None:
    account = make_cloud_account(owner, graph_api, max_per_minute=60)
    add_leads(owner, 10)
    broadcast_id = start(owner)
    while len(graph_api.sent) < 4:
        step(broadcast_id, clock)
    graph_api.fail_next(190)  # the access token expired: the number is logged out
    for _ in range(5):
        step(broadcast_id, clock)
    broadcast = db.session.get(Broadcast, broadcast_id)
    assert broadcast is not None and broadcast.status == "paused"
    # In the workspace's language (pt_BR), since a worker has no reader to ask.
    assert broadcast.pause_reason == "O número Cloud está desconectado: Your access token has expired."
    sent_before = len(graph_api.sent)
    for _ in range(5):
        step(broadcast_id, clock)
    assert len(graph_api.sent) == sent_before  # paused: nothing more goes out
    settings = account.settings
    update_account(
        owner.workspace_id,
        account.id,
        name=account.name,
        max_per_minute=60,
        active=True,
        cloud=CloudSettings(
            phone_number_id=settings["phone_number_id"], access_token=ACCESS_TOKEN, app_secret="",
            verify_token="", graph_url=settings["graph_url"], waba_id=settings.get("waba_id", ""),
        ),
    )  # fmt: skip
    resume_broadcast(owner.workspace_id, broadcast_id)
    assert drive(broadcast_id, clock).status == "done"
    assert sorted(m.to for m in graph_api.sent) == sorted(f"55119{i:08d}" for i in range(10))  # once each


def test_spam_limit_pauses_the_broadcast_with_the_reason(
    owner: factories.Person, graph_api: GraphEmulator, clock: time_machine.Traveller
) -> None:
    make_cloud_account(owner, graph_api, max_per_minute=60)
    add_leads(owner, 6)
    broadcast_id = start(owner)
    while len(graph_api.sent) < 2:
        step(broadcast_id, clock)
    graph_api.fail_next(131048)
    for _ in range(4):
        step(broadcast_id, clock)
    broadcast = db.session.get(Broadcast, broadcast_id)
    assert broadcast is not None and broadcast.status == "paused"
    assert broadcast.pause_reason and "precisa reduzir o ritmo até" in broadcast.pause_reason
    assert len(graph_api.sent) == 2


def test_two_workers_in_parallel_never_send_a_recipient_twice(
    app: Flask, owner: factories.Person, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    add_leads(owner, 60)
    with tasks_held():  # each worker sends what it finds due, as real workers do
        broadcast_id = start(owner)
    graph_api.set_latency(0.005)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with app.app_context():
                account = db.session.get(WhatsAppAccount, cloud_account.id)
                broadcast = db.session.get(Broadcast, broadcast_id)
                assert account is not None and broadcast is not None
                for _ in range(200):
                    queued, skipped = release(broadcast, account, 3)
                    deliver_due()
                    if not queued and not skipped and not deliver_due():
                        break
                db.session.remove()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    graph_api.set_latency(0)
    assert not errors, errors
    deliver_due()
    assert Counter(m.to for m in graph_api.sent) == Counter({f"55119{i:08d}": 1 for i in range(60)})
    statuses = db.session.scalars(select(Message.status).where(Message.author == "broadcast")).all()
    assert len(statuses) == 60 and set(statuses) == {"sent"}


def test_resume_moves_the_rest_off_a_number_that_stays_down(
    owner: factories.Person, graph_api: GraphEmulator, clock: time_machine.Traveller
) -> None:
    first = make_cloud_account(owner, graph_api, max_per_minute=60, name="Loja 1")
    second = make_cloud_account(
        owner, graph_api, phone_number_id="222333444", max_per_minute=60, name="Loja 2"
    )
    add_leads(owner, 12)
    broadcast_id = start(owner)
    while len(graph_api.sent) < 4:
        step(broadcast_id, clock)
    first.health, first.health_reason = "blocked", "Temporarily blocked for policies violations"
    db.session.commit()
    for _ in range(2):
        step(broadcast_id, clock)
    broadcast = db.session.get(Broadcast, broadcast_id)
    assert (
        broadcast is not None and broadcast.status == "paused" and "Loja 1" in (broadcast.pause_reason or "")
    )
    resume_broadcast(owner.workspace_id, broadcast_id)  # the first number is still blocked
    assert drive(broadcast_id, clock).status == "done"
    accepted = Counter(m.to for m in graph_api.sent)
    assert accepted == Counter({f"55119{i:08d}": 1 for i in range(12)})
    late = [m for m in graph_api.sent[4:] if m.phone_number_id == first.settings["phone_number_id"]]
    assert late == [] and second.id


def a_reply_during_a_broadcast(
    owner: factories.Person, account: WhatsAppAccount, leads: int
) -> tuple[set[int], int]:
    """A running broadcast's sends queued (outbox ids), then an agent's reply queued (its id)."""
    from crm.inbox.sending import reply as agent_reply
    from crm.worker import huey

    add_leads(owner, leads)
    broadcast_id = start(owner)
    huey.flush()  # its first tick: run by hand below
    assert dispatch(broadcast_id).status == "running"
    released = set(
        db.session.scalars(
            select(Outbox.id)
            .join(Message, Message.id == Outbox.message_id)
            .where(Message.author == "broadcast")
        )
    )
    assert len(released) == leads and huey.pending_count() == leads
    conversation_id = factories.inbound(account.id, phone="+5511988887777")
    reply = agent_reply(owner.workspace_id, conversation_id, "Já te respondo!", user_id=owner.user_id)
    reply_row = db.session.scalar(select(Outbox.id).where(Outbox.message_id == reply.message.id))
    assert reply_row is not None
    return released, reply_row


@pytest.mark.parametrize("real_queue", ["sqlite", "redis"], indirect=True)
def test_a_reply_is_taken_from_the_queue_before_broadcast_sends_queued_earlier(
    real_queue: str, owner: factories.Person, cloud_account: WhatsAppAccount
) -> None:
    from crm.worker import huey

    released, reply_row = a_reply_during_a_broadcast(owner, cloud_account, 5)
    taken = []
    while (task := huey.dequeue()) is not None:
        taken.append(task.args[0])
    assert taken[0] == reply_row and set(taken[1:]) == released  # the person waiting goes first


@pytest.mark.parametrize("real_queue", ["sqlite", "redis"], indirect=True)
def test_a_send_that_must_wait_or_was_lost_comes_back_at_its_place_in_the_queue(
    real_queue: str, owner: factories.Person, cloud_account: WhatsAppAccount
) -> None:
    from crm.whatsapp.outbox import (
        CONVERSATION_PRIORITY,
        deliver_outbound,
        reconcile_outbox,
        release_for_media,
    )
    from crm.worker import huey

    (broadcast_row,), reply_row = a_reply_during_a_broadcast(owner, cloud_account, 1)
    huey.flush()  # the deliveries already queued: driven by hand below
    while pacing.reserve(cloud_account) == 0:  # the number's window is full for a second
        pass
    assert deliver_outbound(reply_row) == "paced" and deliver_outbound(broadcast_row) == "paced"
    # Each goes back with a time to run at, the reply before the broadcast's send.
    back = {task.args[0]: (task.priority, task.eta is not None) for task in huey.pending()}
    assert back == {reply_row: (CONVERSATION_PRIORITY, True), broadcast_row: (0, True)}
    # Their jobs lost (Redis flushed): the reconciler queues them again at the same places.
    huey.flush()
    db.session.execute(update(Outbox).values(next_attempt_at=utcnow() - timedelta(minutes=5)))
    db.session.commit()
    assert reconcile_outbox()["requeued"] == 2
    again = {task.args[0]: task.priority for task in huey.pending()}
    assert again == {reply_row: CONVERSATION_PRIORITY, broadcast_row: 0}
    # And when their file is ready (a photo converted in the worker).
    huey.flush()
    release_for_media([reply_row, broadcast_row])
    assert {task.args[0]: task.priority for task in huey.pending()} == again
