"""The system page (queue, Redis, numbers' health, heartbeats, recent errors), and a queue that keeps
nothing once its jobs are done."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from crm.db import utcnow
from crm.extensions import db
from crm.whatsapp.accounts import create_account
from crm.whatsapp.models import WhatsAppAccount
from crm.worker import clean_queue_leftovers, huey
from tests import factories
from tests.conftest import login


def test_admins_see_the_queue_and_sends_waiting(logged_in: FlaskClient, app: Flask) -> None:
    page = logged_in.get("/settings/system")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="system-sends-queued"' in html
    if app.config["REDIS_URL"]:  # scaled mode: Redis memory, from INFO memory
        assert 'id="system-redis-used"' in html
    else:
        assert "Redis memory" not in html


def test_agents_cannot_open_it(client: FlaskClient, owner: factories.Person) -> None:
    factories.person("Acme", "agent@acme.example")
    assert login(client, "agent@acme.example").status_code == 302
    assert client.get("/settings/system").status_code == 403


@huey.task()
def _answer() -> str:
    return "a result nobody reads"


@pytest.mark.parametrize("real_queue", ["sqlite", "redis"], indirect=True)
def test_finished_jobs_leave_nothing_in_the_queue(real_queue: str) -> None:
    for _ in range(20):
        _answer()
    while (task := huey.dequeue()) is not None:
        huey.execute(task)
    assert huey.pending_count() == 0
    assert huey.storage.result_store_size() == 0  # results are not kept
    huey.storage.put_data("left-behind", b"x")  # e.g. by an older version
    assert clean_queue_leftovers.call_local() == 1
    assert huey.storage.result_store_size() == 0


@pytest.mark.parametrize("real_queue", ["redis"], indirect=True)
def test_an_old_list_queue_is_dropped_not_fatal(real_queue: str) -> None:
    from crm.worker import _drop_plain_queue

    conn = huey.storage.conn
    conn.delete(huey.storage.queue_key)
    conn.rpush(huey.storage.queue_key, b"a job of an earlier version")
    _drop_plain_queue()  # the reconciler enqueues again from the database what it held
    assert conn.type(huey.storage.queue_key) == b"none"
    _answer()
    assert huey.pending_count() == 1


# --- numbers' health, workers and gateway, recent errors ---------------------------------------


@pytest.fixture
def _ops_state() -> Iterator[None]:
    from crm.ops import heartbeat, recent_errors

    recent_errors.forget_pending()
    heartbeat.forget_local()
    yield
    recent_errors.forget_pending()
    heartbeat.forget_local()


def test_numbers_health_and_pauses(logged_in: FlaskClient, owner: factories.Person) -> None:
    account = db.session.get_one(WhatsAppAccount, factories.sandbox_account(owner, "Vendas"))
    account.health = "degraded"
    account.health_reason = "phone_number_quality_update:FLAGGED"
    account.health_changed_at = utcnow() - timedelta(hours=2)
    account.paused_until = utcnow() + timedelta(minutes=10)
    other = factories.person("Other", "owner@other.example", role="owner")
    factories.sandbox_account(other, "Not theirs")
    db.session.commit()
    html = logged_in.get("/settings/system").get_data(as_text=True)
    row = html.split(f'id="system-number-{account.id}"', 1)[1].split("</tr>", 1)[0]
    assert "Vendas" in row and "Degraded" in row and "FLAGGED" in row
    assert row.count('class="badge danger"') == 1  # paused until …
    assert "Not theirs" not in html  # another workspace's numbers stay there


def test_workers_and_gateway_heartbeats(
    logged_in: FlaskClient,
    owner: factories.Person,
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    _ops_state: None,
) -> None:
    from crm.ops import heartbeat

    monkeypatch.setitem(app.config, "HUEY_IMMEDIATE", False)  # as with a real queue
    html = logged_in.get("/settings/system").get_data(as_text=True)
    assert 'id="system-no-worker"' in html and "No worker or gateway has reported yet." in html

    heartbeat.beat(heartbeat.WORKER, {"queues": {"zapdesk": 4, "zapdesk-ai": 8}})
    now = utcnow()
    db.session.add(
        heartbeat.Heartbeat(
            name="gateway:box-2:99",
            kind="gateway",
            host="box-2",
            pid=99,
            started_at=now - timedelta(days=1),
            seen_at=now - timedelta(minutes=5),
            info={"webqr": True, "sessions": 3},
        )
    )
    db.session.commit()
    create_account(owner.workspace_id, provider="webqr", name="Phone")
    html = logged_in.get("/settings/system").get_data(as_text=True)
    assert 'id="system-no-worker"' not in html
    worker_row = html.split(f'id="system-process-worker-{os.getpid()}"', 1)[1].split("</tr>", 1)[0]
    assert "Running" in worker_row and "queue zapdesk-ai, 8 threads" in worker_row
    gateway_row = html.split('id="system-process-gateway-99"', 1)[1].split("</tr>", 1)[0]
    assert "box-2" in gateway_row and "Not responding" in gateway_row and "5 minutes ago" in gateway_row
    assert 'id="system-no-gateway"' in html  # WebQR numbers, and the only gateway is stale


def test_recent_errors_of_every_process(
    logged_in: FlaskClient, owner: factories.Person, _ops_state: None
) -> None:
    from crm.ops import recent_errors

    log = logging.getLogger("crm.tests.system")
    log.warning("queue backlog: %d jobs", 1200)
    log.error("call failed with Authorization: Bearer abc.def-secret " + "x" * 400)
    log.info("an info line is not an error")
    log.warning("about another workspace", extra={"workspace_id": owner.workspace_id + 1000})
    assert recent_errors.flush() == 3  # what the background writer does: now every web process sees them
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("unexpected")  # not written yet: this process shows it all the same
    html = logged_in.get("/settings/system").get_data(as_text=True)
    section = html.split('id="system-errors"', 1)[1]
    assert "queue backlog: 1200 jobs" in section and "crm.tests.system" in section
    assert "unexpected (ValueError)" in section and "Traceback" not in section
    assert "abc.def-secret" not in section and "Bearer ***" in section
    assert "x" * 300 not in section  # cut to 300 characters
    assert "an info line" not in section and "another workspace" not in section
    assert section.index("unexpected") < section.index("queue backlog")  # newest first


def test_the_table_keeps_only_the_newest(
    app: Flask, monkeypatch: pytest.MonkeyPatch, _ops_state: None
) -> None:
    from crm.ops import recent_errors

    monkeypatch.setattr(recent_errors, "KEPT", 3)
    for n in range(5):
        logging.getLogger("crm.tests.system").warning("warning %d", n)
    recent_errors.flush()
    assert [e.message for e in recent_errors.recent(None)] == ["warning 4", "warning 3", "warning 2"]
