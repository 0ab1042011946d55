"""GET /metrics: the Prometheus text format, counters that add up across processes, who may scrape."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from crm.db import utcnow
from crm.extensions import db
from crm.ops import heartbeat, metrics
from crm.whatsapp.accounts import CloudSettings, create_account, webhook_path
from crm.whatsapp.models import WhatsAppAccount
from crm.worker import huey
from tests import factories
from tests.processes import free_port
from tests.whatsapp.conftest import signature

INTERNAL = {"REMOTE_ADDR": "127.0.0.1"}
OUTSIDE = {"REMOTE_ADDR": "203.0.113.9"}


def scrape(client: FlaskClient, **kwargs: Any) -> dict[str, list[Sample]]:
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = text_string_to_metric_families(response.get_data(as_text=True))
    return {family.name: list(family.samples) for family in families}


def value(samples: list[Sample], name: str | None = None, **labels: str) -> float:
    found = [
        s.value
        for s in samples
        if (name is None or s.name == name) and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def _cloud_account(owner: factories.Person) -> WhatsAppAccount:
    return create_account(
        owner.workspace_id,
        provider="cloud",
        name="Cloud",
        cloud=CloudSettings(
            phone_number_id="1234567890",
            access_token="test-token",
            app_secret="test-app-secret",
            verify_token="verify-me",
            graph_url="http://127.0.0.1:9/unused",
        ),
    )


def _webhook(client: FlaskClient, account: WhatsAppAccount) -> None:
    change = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": "1234567890"},
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": "5511988887777"}],
        "messages": [
            {"from": "5511988887777", "id": "wamid.IN1", "timestamp": "1700000000", "type": "text",
             "text": {"body": "oi"}},
        ],
        "statuses": [
            {"id": "wamid.UNKNOWN", "status": "delivered", "timestamp": "1700000001",
             "recipient_id": "5511988887777"},
        ],
    }  # fmt: skip
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": change}]}],
        }
    ).encode()
    path = webhook_path(account)
    assert path
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature(body, "test-app-secret")}
    assert client.post(path, data=body, headers=headers).status_code == 200
    assert client.post(path, data=body, headers=headers).status_code == 200  # Meta delivers it again


@huey.task()
def _broken_task() -> None:
    raise RuntimeError("a task that fails")


def test_exposition_after_some_activity(client: FlaskClient, owner: factories.Person, app: Flask) -> None:
    sandbox_id = factories.sandbox_account(owner)
    factories.inbound(sandbox_id)  # a customer writes to the sandbox number
    token = factories.api_token(owner)
    sent = client.post(
        "/api/v1/messages",
        json={"to": "+5511999990000", "text": "Olá!", "account_id": sandbox_id},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert sent.status_code == 202, sent.json
    cloud = _cloud_account(owner)
    _webhook(client, cloud)
    _broken_task()  # runs inline here, and fails
    heartbeat.beat(heartbeat.WORKER, {"queues": {"zapdesk": 1, "zapdesk-ai": 1}})

    families = scrape(client)

    inbound = families["zapdesk_inbound_messages"]
    assert value(inbound, provider="sandbox", status="stored") == 1
    assert value(inbound, provider="cloud", status="stored") == 1
    assert value(inbound, provider="cloud", status="duplicate") == 1
    assert value(families["zapdesk_message_statuses"], provider="cloud", status="delivered") == 2
    assert value(families["zapdesk_outbound_messages"], provider="sandbox", status="sent") == 1
    assert value(families["zapdesk_account_sends"], account_id=str(sandbox_id)) == 1
    assert value(families["zapdesk_webhook_requests"], code="200") == 2

    histogram = families["zapdesk_webhook_duration_seconds"]
    assert value(histogram, "zapdesk_webhook_duration_seconds_count") == 2
    assert value(histogram, "zapdesk_webhook_duration_seconds_bucket", le="+Inf") == 2
    assert 0 < value(histogram, "zapdesk_webhook_duration_seconds_sum") < 20
    buckets = [s.value for s in histogram if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets)  # cumulative

    failures = families["zapdesk_task_failures"]
    assert value(failures, queue="zapdesk", task="_broken_task") == 1

    depth = families["zapdesk_queue_depth"]
    assert {(s.labels["queue"], s.labels["state"]) for s in depth} == {
        ("main", "pending"),
        ("main", "scheduled"),
        ("ai", "pending"),
        ("ai", "scheduled"),
    }
    assert all(s.value >= 0 for s in depth)

    health = families["zapdesk_account_health"]
    assert value(health, account_id=str(sandbox_id), health="connected") == 1
    assert value(health, account_id=str(sandbox_id), health="blocked") == 0
    assert value(families["zapdesk_account_paused"], account_id=str(cloud.id)) == 0
    assert value(families["zapdesk_live_processes"], kind="worker") == 1
    assert value(families["zapdesk_live_processes"], kind="gateway") == 0
    assert value(families["zapdesk_oldest_queued_send_age_seconds"]) == 0
    assert value(families["zapdesk_database_up"]) == 1

    if app.config["REDIS_URL"]:  # scaled mode: Redis memory, policy as a label
        assert value(families["zapdesk_redis_up"]) == 1
        assert value(families["zapdesk_redis_memory_used_bytes"]) > 0
        (limit,) = families["zapdesk_redis_memory_max_bytes"]
        assert limit.labels["policy"] and limit.value >= 0
    else:
        assert "zapdesk_redis_up" not in families


def test_counters_add_up_across_processes(client: FlaskClient, app: Flask) -> None:
    """Each process adds its deltas to one table; a scrape adds the scraping process's unwritten ones."""
    metrics.record_send("cloud", 7, "sent")
    assert metrics.flush() == 2  # "another process" wrote its counts
    metrics.record_send("cloud", 7, "sent")
    metrics.record_send("cloud", 7, "sent")
    metrics.flush()
    metrics.record_send("cloud", 7, "failed")  # this process, not written yet
    families = scrape(client)
    outbound = families["zapdesk_outbound_messages"]
    assert value(outbound, provider="cloud", status="sent") == 3
    assert value(outbound, provider="cloud", status="failed") == 1
    assert value(families["zapdesk_account_sends"], account_id="7", provider="cloud") == 3
    assert metrics.flush() == 1 and metrics.flush() == 0


def test_a_failed_flush_keeps_the_counts(tmp_path: Path, other_app: Callable[..., Flask]) -> None:
    broken = other_app(f"sqlite:///{tmp_path}/missing-dir/x.sqlite3")
    metrics.record_send_error("cloud", "130429")
    with broken.app_context(), pytest.raises(Exception, match="unable to open"):
        metrics.flush()
    assert metrics.flush() == 1  # on the reachable database, later
    assert metrics.counters()[("send_errors", '{"code":"130429","provider":"cloud"}')] == 1


def test_long_label_values_are_cut(app: Flask) -> None:
    metrics.record_send_error("cloud", "x" * 500)
    assert metrics.flush() == 1  # fits the table's key


# --- who may scrape ------------------------------------------------------------------------------


def test_without_a_token_only_internal_addresses(client: FlaskClient) -> None:
    assert client.get("/metrics", environ_base=INTERNAL).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    refused = client.get("/metrics", environ_base=OUTSIDE)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::ffff:8.8.8.8"}).status_code == 403
    # Through a proxy the app was not told about, the address seen is the proxy's: not trusted.
    proxied = {"X-Forwarded-For": "10.0.0.5"}
    assert client.get("/metrics", environ_base=INTERNAL, headers=proxied).status_code == 403


def test_with_a_token_only_its_bearer(
    client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "METRICS_TOKEN", "s3cret-metrics")
    assert client.get("/metrics", environ_base=OUTSIDE).status_code == 403
    assert client.get("/metrics", environ_base=INTERNAL).status_code == 403  # the token is required
    wrong = {"Authorization": "Bearer nope"}
    assert client.get("/metrics", environ_base=OUTSIDE, headers=wrong).status_code == 403
    right = {"Authorization": "Bearer s3cret-metrics"}
    assert "zapdesk_inbound_messages" in scrape(client, environ_base=OUTSIDE, headers=right)


def test_behind_trusted_proxies_the_forwarded_client_counts(
    database_url: str, other_app: Callable[..., Flask]
) -> None:
    proxied = other_app(database_url, TRUSTED_PROXIES=1).test_client()
    outside = proxied.get("/metrics", environ_base=INTERNAL, headers={"X-Forwarded-For": "203.0.113.9"})
    assert outside.status_code == 403
    # A client can't pass itself off as internal: the proxy appends the address it saw.
    spoofed = {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"}
    assert proxied.get("/metrics", environ_base=INTERNAL, headers=spoofed).status_code == 403
    inside = proxied.get("/metrics", environ_base=INTERNAL, headers={"X-Forwarded-For": "10.0.0.7"})
    assert inside.status_code == 200


# --- what a broken dependency looks like ------------------------------------------------------------


def test_redis_down_is_a_gauge_not_a_hang(database_url: str, other_app: Callable[..., Flask]) -> None:
    broken = other_app(database_url, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    families = scrape(broken.test_client())
    assert time.monotonic() - started < 3
    assert value(families["zapdesk_redis_up"]) == 0
    assert "zapdesk_queue_depth" not in families  # the queues live in that Redis


def test_a_paused_number_shows(client: FlaskClient, owner: factories.Person) -> None:
    from datetime import timedelta

    account = db.session.get_one(WhatsAppAccount, factories.sandbox_account(owner))
    account.paused_until = utcnow() + timedelta(minutes=5)
    account.health = "degraded"
    db.session.commit()
    families = scrape(client)
    assert value(families["zapdesk_account_paused"], account_id=str(account.id)) == 1
    assert value(families["zapdesk_account_health"], account_id=str(account.id), health="degraded") == 1
    assert value(families["zapdesk_account_health"], account_id=str(account.id), health="connected") == 0
