"""A web process opens its first database connections, their catalog loaded, before it serves; a
forked worker never uses its parent's connections."""

from __future__ import annotations

import os
import re
import runpy
import signal
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Connection, select

from crm import warmup
from crm.extensions import db
from tests import factories
from tests.conftest import BACKEND
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]

postgresql_only = pytest.mark.skipif(BACKEND != "postgresql", reason="the catalog is PostgreSQL's")

THREAD_QUERY = (
    "EXPLAIN SELECT * FROM messages WHERE conversation_id = 1 ORDER BY created_at DESC, id DESC LIMIT 51"
)
CATALOG_SCANS = (
    "SELECT coalesce(sum(coalesce(idx_scan, 0) + coalesce(seq_scan, 0)), 0) FROM pg_stat_xact_sys_tables"
)


def catalog_scans_planning_a_thread(connection: Connection) -> int:
    """Scans of PostgreSQL's catalog this connection made to plan the thread's query, its first."""
    with connection.begin():  # one transaction: the backend's counts stay pending, not reported
        connection.exec_driver_sql(CATALOG_SCANS)  # loads what counting itself reads
        before = connection.exec_driver_sql(CATALOG_SCANS).scalar_one()
        after_counting = connection.exec_driver_sql(CATALOG_SCANS).scalar_one()
        connection.exec_driver_sql(THREAD_QUERY).all()
        after = connection.exec_driver_sql(CATALOG_SCANS).scalar_one()
        connection.rollback()
    return int(after - after_counting - (after_counting - before))


def left_as_it_came(app: Flask) -> bool:
    """Whether a connection the pool just opened (its ``connect`` events run) is as psycopg opened
    it: no transaction, and not in autocommit mode (SQLAlchemy's transactions need that)."""
    from psycopg.pq import TransactionStatus

    with app.app_context():
        db.engine.dispose()
        raw: Any = db.engine.raw_connection()
        try:
            info = raw.driver_connection.info
            return bool(
                info.transaction_status == TransactionStatus.IDLE and not raw.driver_connection.autocommit
            )
        finally:
            raw.close()


@pytest.fixture
def web_app(other_app: Callable[..., Flask], database_url: str) -> Flask:
    """An app of its own on the test database, with a pool as big as a web process's."""
    return other_app(database_url, SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 32})


@postgresql_only
def test_a_web_process_opens_its_connections_with_their_catalog_loaded(web_app: Flask) -> None:
    with web_app.app_context():
        with db.engine.connect() as connection:  # as a connection opened without it
            cold = catalog_scans_planning_a_thread(connection)
        assert warmup.open_connections(web_app) == warmup.CONNECTIONS_AT_START
        pool: Any = db.engine.pool
        assert pool.checkedin() == warmup.CONNECTIONS_AT_START  # open and idle, waiting for requests
        with db.engine.connect() as connection:  # one of them
            warm = catalog_scans_planning_a_thread(connection)
        pool.dispose()  # a connection opened later (more requests at once, one dropped) is loaded too
        with db.engine.connect() as connection:
            later = catalog_scans_planning_a_thread(connection)
    # The tables', columns', indexes' and statistics' entries are in; operators and casts that only
    # a statement's own conditions need are left to it.
    assert cold > 50 and warm * 4 < cold and later * 4 < cold, (cold, warm, later)
    assert left_as_it_came(web_app)


@postgresql_only
def test_a_catalog_that_does_not_load_leaves_the_connection_as_it_came(
    web_app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(warmup, "APP_TABLES", "SELECT * FROM no_such_table")
    assert warmup.open_connections(web_app) == warmup.CONNECTIONS_AT_START
    assert "loading the catalog into a new database connection failed" in caplog.text
    assert left_as_it_came(web_app)  # not a failed transaction that every request would hit


@postgresql_only
def test_a_table_locked_by_a_migration_does_not_hold_up_a_new_connection(web_app: Flask) -> None:
    """A migration holding a table locked: a new connection loads the other tables and goes on."""
    warmup.open_connections(web_app)  # the pool's connections load their catalog from now on
    took: list[float] = []
    with web_app.app_context():
        db.engine.dispose()
        locker = db.engine.connect()
        try:
            locker.exec_driver_sql("LOCK TABLE leads IN ACCESS EXCLUSIVE MODE")

            def open_one() -> None:
                began = time.monotonic()
                with web_app.app_context(), db.engine.connect():
                    took.append(time.monotonic() - began)

            opener = threading.Thread(target=open_one)
            opener.start()
            opener.join(timeout=10)
        finally:
            locker.rollback()  # the lock goes, so a stuck opener would end too
            locker.close()
        opener.join(timeout=10)
        with db.engine.connect() as connection:
            warm = catalog_scans_planning_a_thread(connection)
    assert took and took[0] < 1.5, took  # lock_timeout: 100 ms for the locked table
    assert warm < 150  # messages' catalog was loaded all the same


def test_an_unreachable_database_does_not_stop_the_start(
    other_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = other_app(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing")
    assert warmup.open_connections(unreachable) == 0
    assert "opening database connections at start failed" in caplog.text


@pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite's case")
def test_sqlite_opens_no_connections_at_start(app: Flask) -> None:
    assert warmup.open_connections(app) == 0


def test_both_servers_open_the_connections_in_each_worker(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn (gunicorn.conf.py) and ``flask crm serve`` (crm/server.py) open them in the
    worker once forked, with the worker's app, and not in the parent."""
    from crm import server

    opened: list[Flask] = []
    monkeypatch.setattr(warmup, "open_connections", opened.append)
    hooks = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    hooks["post_worker_init"](SimpleNamespace(wsgi=app))
    assert opened == [app]

    options: dict[str, Any] = {}
    monkeypatch.setattr(server.Server, "run", lambda self: options.update(self.options))
    monkeypatch.setattr(server.EmbeddedServices, "start", lambda self: None)
    server.serve(app, "127.0.0.1", free_port())
    assert opened == [app]  # not before the fork
    options["post_worker_init"](SimpleNamespace(wsgi=app))
    assert opened == [app, app]


def test_the_serve_commands_parent_keeps_no_connection(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """``flask crm serve`` runs the migrations in gunicorn's parent: the connection they used is
    closed before the workers are forked, not kept open there for the parent's lifetime."""
    import flask_migrate

    from crm import cli, server, worker
    from crm.ops import partitions

    with app.app_context():
        db.session.execute(select(1))  # a connection in the pool, as the migrations leave one
        db.session.remove()
        assert db.engine.pool.checkedin() >= 1  # type: ignore[attr-defined]
    pooled_when_serving: list[int] = []
    monkeypatch.setattr(flask_migrate, "upgrade", lambda: None)
    monkeypatch.setattr(partitions, "ensure_partitions", lambda: None)
    monkeypatch.setattr(worker, "limit_malloc_arenas", lambda: None)
    monkeypatch.setattr(cli, "freeze_startup_objects", lambda: None)  # not the test process's heap
    monkeypatch.setattr(
        server,
        "serve",
        lambda *_: pooled_when_serving.append(db.engine.pool.checkedin()),  # type: ignore[attr-defined]
    )
    result = app.test_cli_runner().invoke(args=["crm", "serve", "--port", str(free_port())])
    assert result.exit_code == 0, result.output
    assert pooled_when_serving == [0]


def test_a_forked_worker_does_not_use_its_parents_connections(
    other_app: Callable[..., Flask], database_url: str
) -> None:
    """The child starts with an empty pool, and the parent's connection stays the parent's: the
    child neither uses nor closes it (closing it would end the parent's session on PostgreSQL)."""
    own = other_app(database_url)
    with own.app_context():
        with db.engine.connect() as connection:
            session_before = session_of(connection)
        pool: Any = db.engine.pool
        assert pool.checkedin() == 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python 3.12+)
            child = os.fork()
        if child == 0:
            try:
                os._exit(0 if db.engine.pool.checkedin() == 0 else 1)  # type: ignore[attr-defined]
            finally:
                os._exit(2)
        deadline = time.monotonic() + 30
        while (waited := os.waitpid(child, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        if waited[0] == 0:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            pytest.fail("the forked child did not exit")
        assert os.waitstatus_to_exitcode(waited[1]) == 0
        assert pool.checkedin() == 1
        with db.engine.connect() as connection:
            assert session_of(connection) == session_before  # the same live session


def session_of(connection: Connection) -> int | None:
    """PostgreSQL's backend pid of this connection (None on SQLite)."""
    if connection.dialect.name != "postgresql":
        connection.exec_driver_sql("SELECT 1")
        return None
    return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


PREPARED = "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"


def plans_made(connection: Connection) -> dict[str, tuple[int, int]]:
    """Each statement prepared on this connection (as PostgreSQL shows it), with its runs on its
    generic plan and the plans made for its values."""
    return {
        statement: (generic, custom)
        for statement, generic, custom in connection.exec_driver_sql(PREPARED).all()
    }


def selects_run(connection: Connection, action: Callable[[], object]) -> list[str]:
    """The SELECTs ``action`` runs on this connection, as PostgreSQL shows them prepared."""
    from sqlalchemy import event

    texts: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().startswith("SELECT"):
            texts.append(statement)

    event.listen(connection, "before_cursor_execute", note)
    try:
        action()
    finally:
        event.remove(connection, "before_cursor_execute", note)
    return [_numbered(text) for text in texts]


def _numbered(statement: str) -> str:
    """A statement's parameters numbered as PostgreSQL shows them ($1, $2, ...)."""
    numbers = iter(range(1, 1000))
    return re.sub(r"%\(\w+\)s", lambda _: f"${next(numbers)}", statement)


@pytest.fixture
def long_thread(owner: factories.Person) -> int:
    """A conversation of 60 messages (more than a page)."""
    conversation_id = factories.conversation(owner)
    for n in range(60):
        factories.stored_message(conversation_id, f"message {n}")
    return conversation_id


@postgresql_only
def test_connections_opened_at_start_have_the_inbox_statements_planned(
    web_app: Flask, owner: factories.Person, long_thread: int
) -> None:
    from crm.inbox import listing, services

    assert warmup.open_connections(web_app) == warmup.CONNECTIONS_AT_START
    with web_app.app_context():
        connection = db.session.connection()  # one of those opened at start
        planned = plans_made(connection)

        def as_the_views_read() -> None:  # crm/inbox/views.py: the list, then a thread
            page = listing.filtered_conversations(owner.workspace_id, user_id=owner.user_id, limit=50)
            listing.last_messages(owner.workspace_id, [c.id for c in page.items])
            services.open_thread(owner.workspace_id, long_thread)
            services.thread_page(owner.workspace_id, long_thread, None)

        ran = selects_run(connection, as_the_views_read)
        after = plans_made(connection)
    # The list, its previews, the customers' tags, the thread's row and its messages: each was
    # prepared at start and run until PostgreSQL chose: 5 plans for its values, then its generic
    # plan (kept when it costs no more than those) ...
    assert len(ran) == 5, ran
    assert all(sum(planned.get(statement, (0, 0))) == 6 for statement in ran), (ran, planned)
    kept = [statement for statement in ran if planned[statement][0]]
    assert any("FROM messages \nWHERE" in statement for statement in kept), planned
    # ... and where it kept the generic one, the views' own runs make no plan.
    assert all(after[statement] == (2, 5) for statement in kept), (kept, after)


@postgresql_only
def test_only_the_connections_opened_at_start_plan_statements(web_app: Flask, long_thread: int) -> None:
    warmup.open_connections(web_app)
    with web_app.app_context():
        db.engine.dispose()  # a connection opened later plans its statements as its requests run
        with db.engine.connect() as connection:
            assert plans_made(connection) == {}


@postgresql_only
def test_reads_that_fail_leave_the_connections_to_open_all_the_same(
    web_app: Flask, long_thread: int, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Callable[[], None]:
        def read() -> None:
            raise RuntimeError("a read that fails")

        return read

    assert warmup.open_connections(web_app, reads=broken) == warmup.CONNECTIONS_AT_START
    assert "to plan its statements, failed" in caplog.text
    with web_app.app_context(), db.engine.connect() as connection:
        assert plans_made(connection) == {}
    assert left_as_it_came(web_app)


@postgresql_only
def test_a_statement_that_fails_leaves_the_others_planned(
    web_app: Flask, long_thread: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = warmup.hot_statements

    def with_a_bad_one(app: Flask, reads: Any) -> warmup.Statements:
        return [("SELECT * FROM no_such_table WHERE id = %(id)s", {"id": 1}), *real(app, reads)]

    monkeypatch.setattr(warmup, "hot_statements", with_a_bad_one)
    warmup.open_connections(web_app)
    with web_app.app_context(), db.engine.connect() as connection:
        planned = plans_made(connection)
    assert len(planned) == 5 and all(sum(plans) == 6 for plans in planned.values()), planned
    assert left_as_it_came(web_app)


@postgresql_only
def test_an_empty_inbox_plans_nothing_and_opens_the_connections(web_app: Flask) -> None:
    assert warmup.open_connections(web_app) == warmup.CONNECTIONS_AT_START
    with web_app.app_context(), db.engine.connect() as connection:
        assert plans_made(connection) == {}
