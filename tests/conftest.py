"""Shared fixtures: one app and schema per test session, each test isolated by emptying tables.

Backends: SQLite by default; ``CRM_TEST_BACKEND=postgresql`` runs the same suite on the
PostgreSQL server of TEST_DATABASE_URL (and Redis of TEST_REDIS_URL when set). Without a
service, tests that need it skip with a reason; under CI (CI=true) they fail instead.
"""

from __future__ import annotations

import contextvars
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from huey import Huey
from huey.storage import BaseStorage
from jinja2 import StrictUndefined
from sqlalchemy import create_engine, text
from werkzeug.serving import BaseWSGIServer, make_server

from tests import factories
from tests.services import require_service

BACKEND = os.environ.get("CRM_TEST_BACKEND", "sqlite")


def _postgres_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        require_service("TEST_DATABASE_URL is not set (the PostgreSQL run needs it)")
    assert url is not None
    return url


def _fresh_postgres(url: str) -> None:
    try:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    except Exception as exc:
        require_service(f"PostgreSQL at TEST_DATABASE_URL is unreachable: {exc.__class__.__name__}")


def make_test_config(database_url: str, instance: Path, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key-not-for-production",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "INSTANCE_PATH": str(instance),
        "HUEY_IMMEDIATE": True,
        "REDIS_URL": None,
        "SERVER_NAME": None,
        # Cheap hashing keeps the suite fast; a test checks the production parameters.
        "ARGON2_MEMORY_KIB": 1024,
        "ARGON2_TIME_COST": 1,
        # AI replies run inline at once (a test about the debounce sets its own delay).
        "AI_DEBOUNCE_SECONDS": 0.0,
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    if BACKEND == "postgresql":
        url = _postgres_url()
        _fresh_postgres(url)
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"


@pytest.fixture(scope="session")
def _app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    from flask_migrate import upgrade

    from crm import create_app

    redis_url = os.environ.get("TEST_REDIS_URL") if BACKEND == "postgresql" else None
    app = create_app(make_test_config(database_url, tmp_path_factory.mktemp("instance"), REDIS_URL=redis_url))
    app.jinja_env.undefined = StrictUndefined  # a missing template variable fails the test
    with app.app_context():
        upgrade()  # the schema comes from the migrations, so every test exercises them
    yield app
    with app.app_context():
        from crm.extensions import db

        db.engine.dispose()


def _empty_all_tables(app: Flask) -> None:
    from crm.ai.settings import forget_gate
    from crm.extensions import db
    from crm.inbox import assignment, team
    from crm.leads.consent import forget_keywords
    from crm.realtime import broker, fanout, presence
    from crm.whatsapp.pacing import forget_local_windows

    forget_local_windows()
    fanout.forget_all()
    broker.forget_unsent()
    presence.reset_memory()
    assignment.forget()
    forget_keywords()
    forget_gate()
    with app.app_context():
        team.forget(None)  # the tables are emptied below, behind the session's back
        if app.config["REDIS_URL"]:
            from crm.redis import get_redis

            get_redis().flushdb()  # rate-limit windows and the like, per test
        db.session.remove()
        tables = [t.name for t in reversed(db.metadata.sorted_tables)]
        with db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            else:
                for name in tables:
                    conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture
def app(_app: Flask) -> Iterator[Flask]:
    with _app.app_context():
        yield _app
    _empty_all_tables(_app)


class IsolatedClient(FlaskClient):
    """A test client whose requests run in their own app context, as in production.

    Flask reuses an app context that is already pushed (the test's), which would share ``g``
    and the database session between the test and every request. Each request here runs in
    an empty ``contextvars.Context``; the test's session commits before and re-reads after.
    A streamed body is read whole inside that context too, as a server reads it in one thread.
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        from crm.extensions import db

        db.session.commit()
        kwargs.setdefault("buffered", True)
        try:
            return contextvars.Context().run(super().open, *args, **kwargs)
        finally:
            db.session.expire_all()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    app.test_client_class = IsolatedClient
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> Any:
    return app.test_cli_runner()


CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_from(client: FlaskClient, path: str) -> str:
    """The CSRF token a page hands out, as a browser would read it."""
    html = client.get(path).get_data(as_text=True)
    match = CSRF_RE.search(html) or re.compile(r'"X-CSRFToken": "([^"]+)"').search(html)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def hx(client: FlaskClient, method: str, path: str, **data: str) -> int:
    """An HTMX request with the CSRF header, as the page sends it; the status code."""
    headers = {"HX-Request": "true", "X-CSRFToken": csrf_from(client, "/")}
    return client.open(path, method=method, data=data, headers=headers).status_code


def login(client: FlaskClient, email: str, password: str = factories.PASSWORD) -> Any:
    token = csrf_from(client, "/login")
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


@pytest.fixture
def owner(app: Flask) -> factories.Person:
    return factories.person(workspace="Acme", email="owner@acme.example", role="owner")


@pytest.fixture
def logged_in(client: FlaskClient, owner: factories.Person) -> FlaskClient:
    response = login(client, owner.email)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


# --- the app on a real local port (browser tests, webhooks posted by the Graph emulator) ---------


@dataclass
class LiveServer:
    url: str
    server: BaseWSGIServer
    thread: threading.Thread


@pytest.fixture(scope="session")
def _live_server(_app: Flask) -> Iterator[LiveServer]:
    server = make_server("127.0.0.1", 0, _app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="e2e-live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", server, thread)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def live_server(_live_server: LiveServer, app: Flask) -> str:
    """The base URL of the running app. Depends on ``app`` so each test's rows are emptied after it."""
    return _live_server.url


@contextmanager
def real_storage(queue: Huey, storage_class: type[BaseStorage], **kwargs: Any) -> Iterator[Huey]:
    """``queue`` keeps its tasks in a real storage instead of running them inline, until the block
    ends: then it is emptied (unless the block failed) and put back as it was."""
    saved = (queue.immediate, queue.storage_class, queue.storage_kwargs, queue.storage)
    queue.storage_class, queue.storage_kwargs = storage_class, kwargs
    queue.immediate = False
    queue.storage = queue.create_storage()
    try:
        yield queue
        queue.flush()
    finally:
        queue.immediate, queue.storage_class, queue.storage_kwargs, queue.storage = saved


@pytest.fixture
def real_queue(app: Flask, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Point the shared Huey at a real storage for one test, then put it back (param: sqlite|redis)."""
    from huey.storage import PriorityRedisStorage, SqliteStorage

    from crm.worker import huey

    if request.param == "redis":
        url = os.environ.get("TEST_REDIS_URL")
        if not url:
            require_service("TEST_REDIS_URL is not set: the Redis queue is not checked")
        # A priority queue, as in production.
        storage: tuple[type[BaseStorage], dict[str, Any]] = (PriorityRedisStorage, {"url": url})
    else:
        storage = (SqliteStorage, {"filename": str(tmp_path / "queue.sqlite3")})
    with real_storage(huey, storage[0], **storage[1]):
        try:
            huey.flush()
        except Exception as exc:
            require_service(f"{request.param} queue unreachable: {exc.__class__.__name__}")
        yield request.param


@pytest.fixture
def queued_ai(app: Flask, tmp_path: Path) -> Iterator[Huey]:
    """The AI queue keeps its tasks (SQLite) for the test to run when it chooses: nothing consumes them."""
    from huey.storage import SqliteStorage

    from crm.worker import ai_huey

    with real_storage(ai_huey, SqliteStorage, filename=str(tmp_path / "queue-ai.sqlite3")) as queue:
        yield queue


if TYPE_CHECKING:
    from tests.fakes.gemini import GeminiStub


# --- Gemini (AI replies) ------------------------------------------------------------------------

GEMINI_KEY = "test-gemini-key"


@pytest.fixture(scope="session")
def gemini_server() -> Iterator[GeminiStub]:
    from tests.fakes.gemini import GeminiStub

    with GeminiStub() as stub:
        yield stub


@pytest.fixture
def gemini(gemini_server: GeminiStub, app: Flask) -> Iterator[GeminiStub]:
    """The Gemini stub, emptied, answering ``Bot: <the customer's last message>`` in the JSON the
    product asks for, with the app pointed at it (GEMINI_API_KEY / GEMINI_BASE_URL) until the
    test ends."""
    from tests.fakes.gemini import Outcome

    names = ("GEMINI_API_KEY", "GEMINI_BASE_URL", "AI_TIMEOUT_SECONDS")
    saved = {name: app.config.get(name) for name in names}
    gemini_server.reset()
    gemini_server.set_default(
        Outcome.json_answer(lambda call: {"reply": f"Bot: {call.last_user_text}", "handoff": False})
    )
    app.config.update(GEMINI_API_KEY=GEMINI_KEY, GEMINI_BASE_URL=gemini_server.url, AI_TIMEOUT_SECONDS=5.0)
    yield gemini_server
    app.config.update(saved)
    gemini_server.reset()


# --- media storage -------------------------------------------------------------------------


@pytest.fixture
def media_folder(app: Flask, tmp_path: Path) -> Iterator[Path]:
    """This test's media files in a folder of its own (the app is shared by the whole session);
    the storage the app had is put back afterwards."""
    from crm.media.storage import LocalStorage

    previous = app.extensions.get("media_storage")
    app.extensions["media_storage"] = LocalStorage(tmp_path / "media")
    yield tmp_path / "media"
    app.extensions["media_storage"] = previous


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A local S3 (moto's server) for the module's tests."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
