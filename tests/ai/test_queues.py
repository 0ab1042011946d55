"""The AI queue is apart from the sends' queue: a backlog of answers never delays a send."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from huey.storage import SqliteStorage

from crm.ai.tasks import answer_task, suggest_task
from crm.extensions import db
from crm.inbox.models import Message
from crm.inbox.sending import reply as agent_reply
from crm.worker import ai_huey, huey, start_in_process_consumer
from tests.ai.conftest import Bot
from tests.conftest import real_storage
from tests.fakes.gemini import GeminiStub


def test_ai_tasks_live_on_their_own_queue() -> None:
    assert answer_task.huey is ai_huey and suggest_task.huey is ai_huey
    assert ai_huey.name != huey.name


@pytest.fixture
def real_queues(app: Flask, tmp_path: Path) -> Iterator[None]:
    from crm import worker

    # Consumer threads run tasks in the app the worker was set up with: this test's, whatever
    # app another test module created since.
    saved_app = worker._app.get("app")
    worker._app["app"] = app
    try:
        with (
            real_storage(huey, SqliteStorage, filename=str(tmp_path / "queue.sqlite3")),
            real_storage(ai_huey, SqliteStorage, filename=str(tmp_path / "queue-ai.sqlite3")),
        ):
            yield
    finally:
        if saved_app is None:
            worker._app.pop("app", None)
        else:
            worker._app["app"] = saved_app


def test_sends_keep_flowing_during_an_ai_backlog(real_queues: None, bot: Bot, gemini: GeminiStub) -> None:
    gemini.set_latency(0.4)  # Gemini is slow: 20 answers take 8 s on one AI thread
    conversations = [bot.say(f"Pergunta {n}", phone=f"+55119000100{n:02d}") for n in range(20)]
    assert ai_huey.pending_count() == 20
    consumers = [start_in_process_consumer(1), start_in_process_consumer(1, ai_huey)]
    try:
        time.sleep(0.5)  # the AI thread is busy with the backlog now
        queued = agent_reply(bot.workspace_id, conversations[-1], "Um momento!", user_id=bot.person.user_id)
        started = time.monotonic()
        while time.monotonic() - started < 5:
            db.session.expire_all()
            if db.session.get_one(Message, queued.message.id).status == "delivered":
                break
            time.sleep(0.02)
        waited = time.monotonic() - started
        db.session.rollback()
        assert db.session.get_one(Message, queued.message.id).status == "delivered"
        assert waited < 1.0
        assert ai_huey.pending_count() >= 10  # the backlog is still there
    finally:
        for consumer in consumers:
            consumer.stop(graceful=True)


def test_the_system_page_shows_answers_owed(
    app: Flask, bot: Bot, gemini: GeminiStub, logged_in: FlaskClient
) -> None:
    import re

    app.config["AI_DEBOUNCE_SECONDS"] = 3.0
    try:
        bot.say("Oi")
        bot.say("Oi", phone="+5511900005050")
    finally:
        app.config["AI_DEBOUNCE_SECONDS"] = 0.0
    page = logged_in.get("/settings/system").get_data(as_text=True)
    assert re.search(r'id="system-ai-owed">2<', page)
