"""Logs: JSON lines with request, workspace and task context; request ids in and out; no message
text, phone numbers or secrets at INFO, whatever the format."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from crm.ai.settings import update_settings
from crm.logs import (
    TEXT_FORMAT,
    JsonFormatter,
    MaskingFormatter,
    _role_from_argv,
    current_context,
    make_formatter,
    mask_secrets,
    task_context,
)
from crm.worker import huey, in_app_context
from tests import factories
from tests.conftest import GEMINI_KEY
from tests.fakes.gemini import GeminiStub
from tests.fakes.graph_api import GraphEmulator
from tests.processes import free_port, own_environment, stop_gracefully
from tests.whatsapp.conftest import (
    ACCESS_TOKEN,
    APP_SECRET,
    graph,
    graph_api,
    make_cloud_account,
    post_webhook,
)

__all__ = ["graph", "graph_api"]  # fixtures

ROOT = Path(__file__).resolve().parents[2]
HEX_ID = re.compile(r"[0-9a-f]{32}")
log = logging.getLogger("crm.tests.logs")


def json_lines(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(record)) for record in records]


def access_record(caplog: pytest.LogCaptureFixture, path: str) -> logging.LogRecord:
    found = [r for r in caplog.records if r.name == "crm.access" and getattr(r, "path", None) == path]
    assert len(found) == 1, [r.getMessage() for r in caplog.records]
    return found[0]


# --- the JSON line ---------------------------------------------------------------------------


def test_a_logged_in_request_logs_json_with_its_request_and_workspace_ids(
    logged_in: FlaskClient, owner: factories.Person, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = logged_in.get("/")
    assert response.status_code == 200
    request_id = response.headers["X-Request-ID"]
    assert HEX_ID.fullmatch(request_id)
    [line] = json_lines([access_record(caplog, "/")])
    assert line["request_id"] == request_id and line["workspace_id"] == owner.workspace_id
    assert line["level"] == "INFO" and line["logger"] == "crm.access" and line["process"] == "web"
    assert line["message"].startswith("GET / 200 ") and line["status"] == 200 and line["method"] == "GET"
    assert line["pid"] == os.getpid() and isinstance(line["duration_ms"], float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])


def test_json_lines_carry_exceptions_and_only_json_safe_extras() -> None:
    try:
        raise ValueError("bad thing")
    except ValueError:
        record = log.makeRecord(
            log.name,
            logging.ERROR,
            __file__,
            1,
            "failed for %s",
            ("outbox 7",),
            sys.exc_info(),
            extra={"outbox_id": 7, "tags": ["a", 1], "nan": float("nan"), "obj": object(), "when": {1: 2}},
        )
    text = JsonFormatter().format(record)
    assert "\n" not in text  # one line, whatever the traceback
    line = json.loads(text)
    assert line["message"] == "failed for outbox 7" and line["level"] == "ERROR"
    assert "ValueError: bad thing" in line["exception"]
    assert line["outbox_id"] == 7 and line["tags"] == ["a", 1]
    assert "nan" not in line and "obj" not in line and "when" not in line


def test_an_explicit_workspace_extra_wins_over_the_context() -> None:
    with task_context("sync_templates"):
        record = log.makeRecord(
            log.name, logging.INFO, __file__, 1, "synced", (), None, extra={"workspace_id": 9}
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["workspace_id"] == 9 and line["task"] == "sync_templates"


# --- request ids -----------------------------------------------------------------------------


def test_an_incoming_request_id_is_kept_and_echoed(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.9_Z-1"})
    assert response.headers["X-Request-ID"] == "lb-7f3a.9_Z-1"
    assert access_record(caplog, "/healthz").crm_context.request_id == "lb-7f3a.9_Z-1"  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", ["", "a" * 65, "two words", "x;rm -rf", "<script>", "-leading-dash", "ação"])
def test_a_bad_request_id_is_replaced(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    with caplog.at_level(logging.INFO):
        response = client.get("/healthz", headers={"X-Request-ID": bad})
    request_id = response.headers["X-Request-ID"]
    assert HEX_ID.fullmatch(request_id)
    assert access_record(caplog, "/healthz").crm_context.request_id == request_id  # type: ignore[attr-defined]


def test_each_request_gets_its_own_id_and_leaves_none_behind(app: Flask) -> None:
    """A server thread serves request after request: the context of one must not leak into the
    next (a plain test client runs in the test's own context, like such a thread)."""
    plain = app.test_client()
    first = plain.get("/healthz").headers["X-Request-ID"]
    second = plain.get("/healthz").headers["X-Request-ID"]
    assert first != second
    assert current_context().request_id is None and current_context().workspace_id is None


# --- the text format -------------------------------------------------------------------------


def test_the_text_format_is_the_default_and_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    formatter = make_formatter()
    assert isinstance(formatter, MaskingFormatter) and not isinstance(formatter, JsonFormatter)
    assert TEXT_FORMAT == "%(asctime)s %(levelname)s %(name)s: %(message)s"
    record = log.makeRecord(log.name, logging.INFO, __file__, 1, "hello %s", ("there",), None)
    assert formatter.format(record) == logging.Formatter(TEXT_FORMAT).format(record)
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert isinstance(make_formatter(), JsonFormatter)


# --- worker tasks ----------------------------------------------------------------------------


def test_a_line_inside_a_task_carries_its_name(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=log.name):
        with task_context("deliver_outbound", task_id="0b5e-task"):
            log.info("claimed outbox %s", 41)
        log.info("after the task")
    inside, after = json_lines(caplog.records)
    assert inside["task"] == "deliver_outbound" and inside["task_id"] == "0b5e-task"
    assert inside["process"] == "worker" and inside["message"] == "claimed outbox 41"
    assert "task" not in after and after["process"] == "web"


@huey.task()
@in_app_context
def log_from_a_task(outbox_id: int) -> None:
    # What crm.worker.in_app_context is to do for every task (crm/logs.py, task_context).
    with task_context("log_from_a_task"):
        log.info("delivering outbox %s", outbox_id)


def test_a_task_run_inline_keeps_the_request_id_of_the_request_that_ran_it(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """HUEY_IMMEDIATE runs tasks inside the request: their lines say which request caused them."""
    with caplog.at_level(logging.INFO, logger=log.name):
        with app.test_request_context("/anything", headers={"X-Request-ID": "req-inline-1"}):
            app.preprocess_request()  # the before_request hooks: the request id is bound here
            log_from_a_task(7)
        log_from_a_task(8)  # outside any request
    inside, outside = json_lines(caplog.records)
    assert inside["request_id"] == "req-inline-1" and inside["task"] == "log_from_a_task"
    assert inside["message"] == "delivering outbox 7" and inside["process"] == "worker"
    assert outside["request_id"] is None and outside["task"] == "log_from_a_task"


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (["/venv/bin/flask", "crm", "worker", "--threads", "4"], "worker"),
        (["flask", "--app", "wsgi", "crm", "gateway"], "gateway"),
        (["flask", "crm", "serve", "--port", "5000"], "web"),
        (["/venv/bin/gunicorn", "-w", "2", "wsgi:app"], "web"),
    ],
)
def test_the_process_role_comes_from_the_command(argv: list[str], role: str) -> None:
    assert _role_from_argv(argv) == role


# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leaky", "secret"),
    [
        ("headers {'authorization': 'Bearer tok_abc.DEF-123'}", "tok_abc.DEF-123"),
        ('{"x-goog-api-key": "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234"}', "AIzaSyA-abcdefghijklmnopqrstuv"),
        ("GET https://graph.example/v23.0/me?access_token=EAAGm0PX4ZCps&fields=id", "EAAGm0PX4ZCps"),
        ("GET /webhooks/cloud/wh_Secret42?hub.verify_token=s3cr3t HTTP/1.1", "wh_Secret42"),
        ("GET /webhooks/cloud/wh_Secret42?hub.verify_token=s3cr3t HTTP/1.1", "s3cr3t"),
        ("POST /invite/inv-token-99 302", "inv-token-99"),
        ("models/gemini:generateContent?key=AIza0123456789abcdefghijklmnopqrstu", "AIza0123456789"),
        ("[parameters: ('Oi, tudo bem?', '+5511988887777')]\n(Background", "Oi, tudo bem?"),
        ("token EAAB" + "x" * 40, "EAAB" + "x" * 40),
    ],
)
def test_secrets_are_masked_in_both_formats(leaky: str, secret: str) -> None:
    assert secret not in mask_secrets(leaky)
    record = log.makeRecord(log.name, logging.WARNING, __file__, 1, "call: %s", (leaky,), None)
    assert secret not in JsonFormatter().format(record)
    assert secret not in make_formatter("text").format(record)


def test_an_inbound_message_and_its_replies_never_reach_info_logs(
    client: FlaskClient,
    owner: factories.Person,
    graph_api: GraphEmulator,
    gemini: GeminiStub,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Webhook → ingest → AI reply → Cloud API send → agent reply: the whole cycle, at INFO."""
    account = make_cloud_account(owner, graph_api)
    update_settings(owner.workspace_id, enabled=True)
    inbound_text = "Meu CPF é 123.456.789-00, SEGREDO-INBOUND"
    agent_text = "Anotado, SEGREDO-AGENTE"
    phone = "5511977776666"
    token = factories.api_token(owner)
    body = graph_api.message_payload(from_phone=phone, text=inbound_text, name="Maria Sigilo")

    with caplog.at_level(logging.INFO):
        assert post_webhook(client, account, body).status_code == 200
        conversations = client.get("/api/v1/conversations", headers={"Authorization": f"Bearer {token}"})
        conversation_id = conversations.json["data"][0]["id"]
        reply = client.post(
            f"/api/v1/conversations/{conversation_id}/messages",
            json={"text": agent_text},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert reply.status_code == 202

    assert [sent.text for sent in graph_api.sent] == [f"Bot: {inbound_text}", agent_text]
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert any(r.name == "crm.whatsapp.webhooks" for r in records)  # the cycle did log
    webhook_line = json_lines([access_record(caplog, "/webhooks/cloud/…")])[0]
    assert HEX_ID.fullmatch(webhook_line["request_id"])
    everything = "\n".join(
        [r.getMessage() for r in records]
        + [JsonFormatter().format(r) for r in records]
        + [make_formatter("text").format(r) for r in records]
    )
    for secret in (
        "SEGREDO-INBOUND",
        "SEGREDO-AGENTE",
        "123.456.789-00",
        phone,
        "Maria Sigilo",
        token,
        ACCESS_TOKEN,
        APP_SECRET,
        GEMINI_KEY,
        account.webhook_key or "no key",
    ):
        assert secret not in everything, secret


# --- the real process ------------------------------------------------------------------------


def test_serve_writes_only_json_lines_to_stderr(tmp_path: Path) -> None:
    """``flask crm serve`` with LOG_FORMAT=json: the migrations, gunicorn's master and worker, the
    task consumer and the app all write one JSON object per line."""
    port = free_port()
    env = own_environment()
    env.update(
        FLASK_APP="app.py",
        CRM_INSTANCE_PATH=str(tmp_path / "instance"),
        LOG_LEVEL="INFO",
        LOG_FORMAT="json",
        CRM_EMBEDDED_GATEWAY="0",
        PYTHONUNBUFFERED="1",
    )
    flask = str(Path(sys.executable).with_name("flask"))
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [flask, "crm", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    response = httpx.get(f"{base}/healthz", headers={"X-Request-ID": "probe-42"}, timeout=2)
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, stderr_path.read_text()
                    assert time.monotonic() < deadline, stderr_path.read_text()
                    time.sleep(0.2)
            assert response.headers["X-Request-ID"] == "probe-42"
            httpx.get(f"{base}/webhooks/cloud/wh-secret-key?hub.verify_token=s3cr3t", timeout=5)
        finally:
            stop_gracefully(proc)
    text = stderr_path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    loggers = {line["logger"] for line in lines}
    assert {"alembic.runtime.migration", "gunicorn.error", "crm.access"} <= loggers, loggers
    [probe] = [line for line in lines if line["logger"] == "crm.access" and line["path"] == "/healthz"]
    assert probe["request_id"] == "probe-42" and probe["process"] == "web"
    assert "wh-secret-key" not in text and "s3cr3t" not in text
