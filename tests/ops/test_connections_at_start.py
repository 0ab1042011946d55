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
from psycopg.pq import TransactionStatus
from sqlalchemy import Connection, create_engine, event, select
from sqlalchemy.pool import NullPool

from crm import warmup
from crm.extensions import db
from tests import factories
from tests.conftest import BACKEND, login
from tests.prepared import as_prepared, plans_made
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


@pytest.fixture(autouse=True)
def _unhurried_planning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests count every plan: a busy machine must not cut the reads or the planning short."""
    monkeypatch.setattr(warmup, "READING_SECONDS", 60.0)
    monkeypatch.setattr(warmup, "PLANNING_SECONDS", 60.0)


@pytest.fixture
def long_thread(owner: factories.Person) -> int:
    """A conversation of 60 messages (more than a page)."""
    conversation_id = factories.conversation(owner)
    for n in range(60):
        factories.stored_message(conversation_id, f"message {n}")
    return conversation_id


@pytest.fixture
def one_connection_app(other_app: Callable[..., Flask], database_url: str) -> Flask:
    """A web process whose pool holds one connection: every request takes the one opened at start."""
    options = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 5}
    return other_app(database_url, SQLALCHEMY_ENGINE_OPTIONS=options)


@postgresql_only
def test_the_inbox_runs_on_statements_planned_at_start(
    one_connection_app: Flask, owner: factories.Person, long_thread: int
) -> None:
    app = one_connection_app
    assert warmup.open_connections(app) == 1
    with app.app_context(), db.engine.connect() as connection:
        # Left as a request expects it: no transaction, not in autocommit mode, the waits set for
        # planning put back.
        raw: Any = connection.connection.driver_connection
        assert raw.info.transaction_status == TransactionStatus.IDLE and not raw.autocommit
        settings = connection.exec_driver_sql(
            "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
        )
        assert settings.one() == ("0", "0")
        planned = plans_made(connection)
    client = app.test_client()
    login(client, owner.email)
    ran: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        ran.append(as_prepared(statement))

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", note)
    try:
        # The list, a thread and its older page, as htmx asks for them.
        assert client.get("/", headers={"HX-Request": "true"}).status_code == 200
        thread = client.get(f"/conversations/{long_thread}", headers={"HX-Request": "true"})
        older = re.search(r'/conversations/\d+/older\?cursor=[^"&]+', thread.get_data(as_text=True))
        assert thread.status_code == 200 and older is not None
        assert client.get(older.group(0), headers={"HX-Request": "true"}).status_code == 200
    finally:
        with app.app_context():
            event.remove(db.engine, "before_cursor_execute", note)
        with app.app_context(), db.engine.connect() as connection:
            after = plans_made(connection)
    # Every SELECT the views ran was prepared at start and run until PostgreSQL chose: 5 plans for
    # its values, then its generic plan: the session's lookup, the list, its previews, the
    # customers' tags, the thread's row and its messages, the team's members and AI switch, the
    # conversation read again and its older page ...
    selects = {statement for statement in ran if statement.startswith("SELECT")}
    assert len(selects) >= 6 and selects <= set(planned), (selects - set(planned), planned)
    assert all(sum(planned[statement]) == 6 for statement in selects), planned
    assert any("FROM messages \nWHERE" in statement for statement in selects), selects
    # ... and the views' runs plan nothing more than PostgreSQL's choice asks: nothing where it kept
    # the generic plan, one plan a run where it plans for the values.
    for statement in selects:
        generic, custom = planned[statement]
        runs = ran.count(statement)
        assert after[statement] == ((generic + runs, custom) if generic else (0, custom + runs)), statement
    assert any(planned[statement][0] for statement in selects)  # not every plan for the values


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
    def broken() -> list[Callable[[], None]]:
        def read() -> None:
            raise RuntimeError("a read that fails")

        return [read]

    assert warmup.open_connections(web_app, reads=broken) == warmup.CONNECTIONS_AT_START
    assert "to plan its statements, failed" in caplog.text
    with web_app.app_context(), db.engine.connect() as connection:
        assert plans_made(connection) == {}
    assert left_as_it_came(web_app)


@postgresql_only
def test_a_table_locked_at_start_leaves_the_statements_to_the_requests(
    web_app: Flask, database_url: str, long_thread: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A migration holding the conversations locked as a web process starts: its reads give up
    after ``LOCK_WAIT``, and the connections open all the same."""
    opened: list[int] = []
    starting = threading.Thread(target=lambda: opened.append(warmup.open_connections(web_app)))
    migration = create_engine(database_url, poolclass=NullPool)  # not the pool open_connections renews
    with migration.connect() as locker:
        locker.exec_driver_sql("LOCK TABLE conversations IN ACCESS EXCLUSIVE MODE")
        try:
            starting.start()
            starting.join(timeout=warmup.OPENING_SECONDS)
            started_while_locked = not starting.is_alive()
        finally:
            locker.rollback()  # the lock goes, so a stuck start would end too
    migration.dispose()
    starting.join(timeout=10)
    assert started_while_locked and opened == [warmup.CONNECTIONS_AT_START]
    assert "to plan its statements, failed" in caplog.text
    with web_app.app_context(), db.engine.connect() as connection:
        assert plans_made(connection) == {}


@postgresql_only
def test_a_statement_that_fails_leaves_the_others_planned(
    web_app: Flask, long_thread: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = warmup.hot_statements
    noted: warmup.Statements = []

    def with_a_bad_one(app: Flask, reads: warmup.Reads) -> warmup.Statements:
        noted.extend(real(app, reads))
        return [("SELECT * FROM no_such_table WHERE id = %(id)s", [{"id": 1}]), *noted]

    monkeypatch.setattr(warmup, "hot_statements", with_a_bad_one)
    warmup.open_connections(web_app)
    with web_app.app_context(), db.engine.connect() as connection:
        planned = plans_made(connection)
    assert noted and set(planned) == {as_prepared(statement) for statement, _values in noted}
    assert all(sum(plans) == 6 for plans in planned.values()), planned
    assert left_as_it_came(web_app)


@postgresql_only
def test_an_empty_inbox_plans_nothing_and_opens_the_connections(web_app: Flask) -> None:
    assert warmup.open_connections(web_app) == warmup.CONNECTIONS_AT_START
    with web_app.app_context(), db.engine.connect() as connection:
        assert plans_made(connection) == {}


@postgresql_only
def test_a_short_thread_still_has_older_pages_planned(web_app: Flask, owner: factories.Person) -> None:
    """The newest message's conversation has that one message, and a newer conversation none: the
    short thread is read, and an older page all the same (empty), so that the first scroll up on
    each connection doesn't make the function's plan (migration 0025)."""
    from crm.inbox import services

    factories.conversation(owner)
    lead_id = factories.lead(owner, phone="+5511977776666")
    services.open_conversation(owner.workspace_id, factories.sandbox_account(owner), lead_id)
    db.session.commit()
    warmup.open_connections(web_app)
    with web_app.app_context(), db.engine.connect() as connection:
        planned = plans_made(connection)
    assert any("messages_before(" in statement for statement in planned), planned


@postgresql_only
def test_threads_are_read_from_several_of_the_first_pages_conversations(
    web_app: Flask, owner: factories.Person
) -> None:
    """PostgreSQL keeps a statement's generic plan only if it costs less than the plans for the
    values did on average. Made on one conversation (the newest message's, which can be the
    biggest), the choice could go the wrong way for every other one: the runs at start take the
    values of the newest message's conversation, then of the next ones on the list, in turn."""
    account = factories.sandbox_account(owner)
    listed = [factories.inbound(account, phone=f"+55119888800{n:02d}") for n in range(8)]
    newest = listed[6]  # second on the list (by its last message), and the newest message's
    factories.stored_message(newest, "the newest message")
    db.session.commit()
    statements = warmup.hot_statements(web_app, warmup.inbox_reads)
    read = [conversation for conversation in reversed(listed) if conversation != newest]
    opened = [newest, *read[: warmup.CUSTOM_PLANS - 1]]
    by_text = dict(statements)
    thread = [
        values for text, values in statements if text.startswith("SELECT messages.id, messages.workspace_id")
    ]
    assert [values["conversation_id_1"] for values in thread[0]] == opened, thread
    row = [values for text, values in statements if text.startswith("SELECT conversations.id AS")]
    assert [values["pk_1"] for values in row[0]] == opened, row  # each read again for its older page
    users = [values for text, values in by_text.items() if "FROM users" in text]
    assert users and all(len(values) == 1 for values in users)  # the session's lookup, the team's


def conversation_read(conversation_id: int) -> Callable[[], object]:
    """A read at start of one statement, with the conversation's id as its one value."""
    from crm.inbox.models import Conversation

    return lambda: db.session.execute(select(Conversation.id).where(Conversation.id == conversation_id)).all()


@postgresql_only
def test_a_thread_that_fails_at_start_is_left_out(web_app: Flask, owner: factories.Person) -> None:
    """A later read that fails in the database (a statement timed out, or a conversation gone) is
    rolled back to its savepoint: the reads after it still run, with the waits set for them."""
    from sqlalchemy import text

    from crm.leads.models import Lead

    waits: list[str] = []

    def read(conversation_id: int) -> Callable[[], object]:
        def run() -> None:
            conversation_read(conversation_id)()
            waits.append(db.session.execute(text("SELECT current_setting('statement_timeout')")).scalar_one())

        return run

    def failing() -> None:
        db.session.execute(select(Lead.id).where(Lead.id == 1)).all()
        db.session.execute(text("SELECT 1 / 0"))

    statements = warmup.hot_statements(web_app, lambda: [read(1), failing, read(2)])
    assert [[next(iter(v.values())) for v in values] for _text, values in statements] == [[1, 2]]
    assert waits == [warmup.STATEMENT_WAIT, warmup.STATEMENT_WAIT]


@postgresql_only
def test_no_read_after_the_first_begins_past_the_reading_time(
    web_app: Flask, owner: factories.Person, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(warmup, "READING_SECONDS", -1.0)
    with caplog.at_level("INFO", logger="crm.warmup"):
        statements = warmup.hot_statements(web_app, lambda: [conversation_read(1), conversation_read(2)])
    assert [[next(iter(v.values())) for v in values] for _text, values in statements] == [[1]]
    assert "1 of 2 reads done in time" in caplog.text


class Recording:
    """A DB-API connection that notes what its cursors run (``plan_statements`` drives it)."""

    def __init__(self) -> None:
        self.autocommit = False
        self.ran: list[tuple[str, Any, bool | None]] = []

    def cursor(self) -> Any:
        connection = self

        class Cursor:
            def __enter__(self) -> Cursor:
                return self

            def __exit__(self, *_: object) -> None:
                return None

            def execute(self, statement: str, values: Any = None, prepare: bool | None = None) -> None:
                connection.ran.append((statement, values, prepare))

        return Cursor()


def test_each_statements_runs_take_its_values_in_turn() -> None:
    connection = Recording()
    statements = [("A", [{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}]), ("B", [{"id": 9}])]
    warmup.plan_statements(statements, connection, None)
    ran = [(text, values) for text, values, _prepare in connection.ran]
    assert ran[:2] == [
        (f"SET lock_timeout = '{warmup.LOCK_WAIT}'", None),
        (f"SET statement_timeout = '{warmup.STATEMENT_WAIT}'", None),
    ]
    assert ran[2:-2] == [
        *[("A", {"id": n}) for n in (1, 2, 3, 4, 1, 2)],
        *[("B", {"id": 9})] * warmup.PLAN_RUNS,
    ]
    assert ran[-2:] == [("RESET statement_timeout", None), ("RESET lock_timeout", None)]
    assert all(prepare for _text, _values, prepare in connection.ran[2:-2])  # prepared at once
    assert connection.autocommit is False  # left as it came
