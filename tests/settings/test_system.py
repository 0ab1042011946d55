"""The system page, and a queue that keeps nothing once its jobs are done."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

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
