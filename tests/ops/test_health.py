"""/healthz stays liveness; /readyz checks the database, Redis, the queue consumers and the gateway."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from crm import worker
from crm.db import utcnow
from crm.extensions import db
from crm.ops import heartbeat
from crm.ops.heartbeat import GATEWAY, WORKER, Heartbeat
from crm.whatsapp.accounts import create_account
from crm.whatsapp.gateway import Gateway
from tests import factories
from tests.processes import free_port

BOTH_QUEUES = {"queues": {"zapdesk": 4, "zapdesk-ai": 8}}


def _other_process(kind: str, seen_ago: timedelta, info: dict[str, Any] | None = None) -> None:
    """A heartbeat row as another machine's process writes it."""
    now = utcnow()
    db.session.add(
        Heartbeat(
            name=f"{kind}:other-host:4242",
            kind=kind,
            host="other-host",
            pid=4242,
            started_at=now - timedelta(hours=1),
            seen_at=now - seen_ago,
            info=info if info is not None else BOTH_QUEUES,
        )
    )
    db.session.commit()


@pytest.fixture
def queued(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Readiness as with a real queue (the suite runs tasks inline, which needs no consumer)."""
    monkeypatch.setitem(app.config, "HUEY_IMMEDIATE", False)


def test_healthz_keeps_its_contract(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_ready(client: FlaskClient, app: Flask) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.json
    body = response.json
    assert body is not None and body["status"] == "ready"
    checks = body["checks"]
    assert checks["database"] == {"status": "ok"}
    assert checks["redis"]["status"] == ("ok" if app.config["REDIS_URL"] else "skipped")
    assert checks["worker"]["status"] == "skipped"  # tasks run inline here
    assert checks["gateway"]["status"] == "skipped"  # no WebQR numbers


def test_ready_with_live_consumers(client: FlaskClient, queued: None) -> None:
    heartbeat.beat(WORKER, BOTH_QUEUES)
    response = client.get("/readyz")
    assert response.status_code == 200, response.json
    worker_check = response.json["checks"]["worker"]
    assert worker_check["status"] == "ok" and worker_check["processes"] == 1
    assert worker_check["age_seconds"] < 5


def test_stale_worker_heartbeat_is_not_ready(client: FlaskClient, queued: None) -> None:
    _other_process(WORKER, seen_ago=timedelta(minutes=10))
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json
    assert body["status"] == "not_ready" and body["failed"] == ["worker"]
    assert body["error"]["code"] == "not_ready"
    check = body["checks"]["worker"]
    assert check["status"] == "fail" and "45 seconds" in check["reason"]
    assert check["last_seen"] is not None
    assert "other-host" not in response.get_data(as_text=True)  # no host names to anonymous callers

    heartbeat.beat(WORKER, BOTH_QUEUES)  # a consumer comes up
    assert client.get("/readyz").status_code == 200


def test_no_worker_at_all_is_not_ready(client: FlaskClient, queued: None) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["worker"]["last_seen"] is None


def test_a_queue_without_consumer_is_not_ready(client: FlaskClient, queued: None) -> None:
    heartbeat.beat(WORKER, {"queues": {"zapdesk": 4}})
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "zapdesk-ai" in response.json["checks"]["worker"]["reason"]


def test_the_gateway_is_needed_only_with_webqr_numbers(client: FlaskClient, owner: factories.Person) -> None:
    factories.sandbox_account(owner)
    assert client.get("/readyz").json["checks"]["gateway"]["status"] == "skipped"

    account = create_account(owner.workspace_id, provider="webqr", name="Phone")
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["failed"] == ["gateway"]

    _other_process(GATEWAY, seen_ago=timedelta(seconds=2), info={"webqr": True, "sessions": 1})
    response = client.get("/readyz")
    assert response.status_code == 200, response.json
    assert response.json["checks"]["gateway"]["status"] == "ok"

    account.status = "disabled"  # switched off: no gateway needed any more
    db.session.commit()
    assert client.get("/readyz").json["checks"]["gateway"]["status"] == "skipped"


def test_a_gateway_that_cannot_load_whatsapp_web_is_not_ready(
    client: FlaskClient, owner: factories.Person
) -> None:
    create_account(owner.workspace_id, provider="webqr", name="Phone")
    _other_process(GATEWAY, seen_ago=timedelta(seconds=1), info={"webqr": False, "detail": "glibc"})
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "neonize" in response.json["checks"]["gateway"]["reason"]


def test_not_ready_when_redis_is_down(database_url: str, other_app: Callable[..., Flask]) -> None:
    port = free_port()
    broken = other_app(database_url, REDIS_URL=f"redis://127.0.0.1:{port}/0")
    started = time.monotonic()
    response = broken.test_client().get("/readyz")
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    body = response.json
    assert body is not None and body["failed"] == ["redis"]
    assert body["checks"]["redis"]["status"] == "fail"
    assert body["checks"]["database"]["status"] == "ok"
    text = response.get_data(as_text=True)
    assert str(port) not in text and "Traceback" not in text  # why, but no addresses or stack traces


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung Redis)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()


def test_a_hung_redis_does_not_hang_readiness(
    database_url: str, other_app: Callable[..., Flask], silent_server: int
) -> None:
    broken = other_app(
        database_url, REDIS_URL=f"redis://127.0.0.1:{silent_server}/0", PROBE_TIMEOUT_SECONDS=0.3
    )
    started = time.monotonic()
    response = broken.test_client().get("/readyz")
    assert time.monotonic() - started < 2
    assert response.status_code == 503 and response.json["failed"] == ["redis"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_not_ready_when_the_database_is_down(
    tmp_path: Path, other_app: Callable[..., Flask], backend: str
) -> None:
    url = (
        f"sqlite:///{tmp_path}/missing-dir/x.sqlite3"
        if backend == "sqlite"
        else f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    )
    response = other_app(url).test_client().get("/readyz")
    assert response.status_code == 503
    body = response.json
    assert body is not None and body["failed"] == ["database"]
    assert body["checks"]["worker"]["status"] == "unknown"
    assert "127.0.0.1" not in response.get_data(as_text=True)


# --- who writes heartbeats ---------------------------------------------------------------------


@pytest.mark.parametrize("real_queue", ["sqlite"], indirect=True)
def test_consumer_threads_beat_while_they_run(
    app: Flask, real_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huey's start-up and shut-down hooks (crm/worker.py) register the consumer's threads."""
    monkeypatch.setitem(worker._app, "app", app)  # the app the consumer's threads run in
    consumer = worker.start_in_process_consumer(2)
    try:
        deadline = time.monotonic() + 5
        while heartbeat.worker_info() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert heartbeat.worker_info() == {"queues": {"zapdesk": 2}}
        heartbeat.write_once(app)  # what the background writer does every HEARTBEAT_SECONDS
        rows = heartbeat.heartbeats(WORKER)
        assert [(r.pid, r.info) for r in rows] == [(heartbeat.os.getpid(), {"queues": {"zapdesk": 2}})]
    finally:
        consumer.stop(graceful=True)
    assert heartbeat.worker_info() is None
    db.session.expire_all()
    assert heartbeat.heartbeats(WORKER) == []  # the last thread out removed the row


def test_the_gateway_beats_from_its_loop_and_leaves_when_stopped(app: Flask) -> None:
    gateway = Gateway(app, client_factory=lambda *a, **k: None, poll_seconds=0.02)
    stop = threading.Event()
    thread = threading.Thread(target=gateway.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            db.session.expire_all()
            if db.session.scalar(select(Heartbeat).where(Heartbeat.kind == GATEWAY)) is not None:
                break
            time.sleep(0.02)
        rows = heartbeat.fresh(GATEWAY)
        assert len(rows) == 1 and rows[0].info == {"webqr": True, "sessions": 0}
    finally:
        stop.set()
        thread.join(timeout=10)
    db.session.expire_all()
    assert heartbeat.heartbeats(GATEWAY) == []


def test_old_rows_are_pruned(app: Flask) -> None:
    _other_process(WORKER, seen_ago=timedelta(days=2))
    heartbeat.beat(WORKER, BOTH_QUEUES)
    assert heartbeat.prune() == 1
    assert [row.host for row in heartbeat.heartbeats()] == [heartbeat.socket.gethostname()]
