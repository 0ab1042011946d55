"""What a web process would otherwise do on its first requests and first live event, done before it
serves them.

Measured on the first live event after a start (bench/fanout.py, 2026-12-05): rendering a new
message's fragments took 120-165 ms against 10-20 ms later, every open tab of the process waiting
for it: Babel read the language's data from disk (~55 ms) and Jinja compiled the two templates
(~60 ms); the rest was SQLAlchemy compiling its statements, which needs the data and stays. Every
page's first view paid the same for its own templates. So each web process compiles every
template (86, ~0.5 s in all) and loads each language's data and catalogue once, at start-up,
before the garbage collector's walks are spared what start-up made (crm/heap.py).

On PostgreSQL a new connection is slow in the same way: its first statements load the catalog
entries of every table and index they touch (for messages, those of each monthly partition). On
the inbox's database (bench/inbox.py) the first conversation-list preview on a new connection took
4.7 ms against 1.0 ms later, more when the machine was busy, and 50 agents starting to work made
the web processes open bursts of connections. So each web process, once forked (gunicorn's
``post_worker_init``: gunicorn.conf.py, crm/server.py), opens its first connections before it
serves, and every new connection of a web process plans a scan of every table of the app's schema
once, before it is used (~11 ms).

The connections opened at start also plan the inbox's hot statements before they serve. Planning
a statement over the monthly partitions of messages takes longer than running it (crm/pg.py), and
PostgreSQL plans a prepared statement for its values on its first five runs before it chooses
its generic plan (where it costs less); psycopg prepares one only on its sixth run. So a web
process's 16 connections each planned each statement of the list and the thread up to ten times
as the first agents worked, and on a busy machine such a plan took over 5 ms now and then
(bench/inbox.py, BENCHMARKS.md). The web process reads what an agent's first requests read once
(the session's lookup, the list's first page with its previews, the team's members and AI switch,
threads and their older pages), notes the statements it ran with their values, and runs each of
them on every connection it opens at start, prepared at once, until PostgreSQL has made its
plans. Connections opened later (more requests at once than connections, the pool's 30-minute
recycle) plan their statements as their requests run them.

PostgreSQL chooses between its plans by their costs: it keeps the generic plan only if it costs
less than the plans for the values did on average. So the threads read at start are five: the
newest message's conversation and the next ones on the list, each statement's runs taking their
values in turn, and the choice is made on conversations agents open. Made on one conversation
alone, it could go the wrong way for them all: on the inbox's database (bench/inbox.py) the
newest message's conversation was the one of 100,000 messages, for which the generic plan of the
thread's messages looked dearer; each connection then planned that statement for its values on
every run, until enough other conversations had been opened on it (30 to 47 plans in the first
measured run). A thread read at start is left out if it fails (a conversation merged away as the
process starts) and none is begun after ``READING_SECONDS``: the first read alone is needed.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from sqlalchemy import event

from crm.pg import built_select

log = logging.getLogger(__name__)

DATE_FORMATS = ("short", "medium", "long")

# Connections each web process opens before it serves: as many as bench/inbox.py gives a process
# threads. The pool opens more when more requests run at once.
CONNECTIONS_AT_START = 16

# A new connection plans (does not run) a scan of each table: that loads the table's catalog
# entries and its indexes', and those of all its partitions; a new table needs no change here.
# Each plan is a transaction of its own, so the locks it takes go at once, and none waits long
# for a lock (a migration holding one: that table is left to the statements that need it).
APP_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND has_table_privilege(c.oid, 'SELECT')
"""
LOCK_WAIT = "100ms"
CATALOG_SECONDS = 2.0  # at most, per connection: the rest is left to the statements
OPENING_SECONDS = 10.0  # at most, opening connections at start (gunicorn's worker timeout is 30 s)

# Runs of each hot statement on a connection opened at start, prepared on the first: PostgreSQL
# plans it for its values on the first five, then makes its generic plan and keeps it if it costs
# less than those did on average (a statement it goes on planning for its values, it plans on
# every run). As many conversations as those five are read at start, each statement's runs taking
# the values noted in turn.
CUSTOM_PLANS = 5
PLAN_RUNS = CUSTOM_PLANS + 1
READING_SECONDS = 1.0  # no read after the first begins past this, from when what to read is known
PLANNING_SECONDS = 1.0  # at most, per connection
STATEMENT_WAIT = "500ms"  # at most, per run: a statement that slow is left to the requests

# Each statement's text as the driver gets it, and the values it ran with (at most CUSTOM_PLANS,
# in the order first seen).
Statements = list[tuple[str, list[Any]]]
# Reads in two steps: the outer call finds what to read (its statements are not noted) and returns
# the reads whose statements are noted, or None when there is nothing to read. The first read is
# needed: if it fails, nothing is planned. A later one that fails is left out (with the values it
# ran), and none starts READING_SECONDS after the outer call returned.
Reads = Callable[[], list[Callable[[], object]] | None]


def warm_up(app: Flask) -> dict[str, float | int]:
    """Compile the templates, load each language and configure the mappers; returns what it did
    (templates compiled, seconds taken)."""
    began = time.perf_counter()
    templates = compile_templates(app)
    load_languages(app)
    from sqlalchemy.orm import configure_mappers

    configure_mappers()
    return {"templates": templates, "seconds": round(time.perf_counter() - began, 3)}


def compile_templates(app: Flask) -> int:
    """Every template of the app, compiled into Jinja's cache; returns how many. One that does not
    compile is left for its page to report: it must not keep the whole server from starting."""
    compiled = 0
    for name in app.jinja_env.list_templates(extensions=["html"]):
        try:
            app.jinja_env.get_template(name)
        except Exception:
            log.exception("template %s does not compile", name)
        else:
            compiled += 1
    return compiled


def load_languages(app: Flask) -> None:
    """Each language's catalogue and Babel data (dates, times, numbers), as a page reads them."""
    from flask_babel import force_locale, format_decimal

    from crm import i18n_fast

    now = datetime.now(UTC)
    with app.test_request_context("/"):
        for language in app.config["LANGUAGES"]:
            with force_locale(language):
                i18n_fast.gettext("Inbox")
                for fmt in DATE_FORMATS:
                    i18n_fast.format_datetime(now, fmt)
                format_decimal(1234.5)


def _outside_transactions(dbapi_connection: Any, failing: str, work: Callable[[Any], None]) -> None:
    """``work`` given a cursor of a new connection in autocommit mode (each statement a transaction
    of its own, so the locks it takes go at once), waiting ``LOCK_WAIT`` at most for a lock.
    Whatever fails is logged as ``failing`` and leaves the connection as it came: its requests do
    what this could not."""
    autocommit = dbapi_connection.autocommit
    try:
        dbapi_connection.autocommit = True
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = '{LOCK_WAIT}'")
            try:
                work(cursor)
            finally:
                cursor.execute("RESET lock_timeout")
    except Exception:
        log.warning("%s failed", failing, exc_info=True)
    try:
        dbapi_connection.autocommit = autocommit
    except Exception:  # a broken connection: the pool finds out on its first use
        log.debug("restoring autocommit on a new connection failed", exc_info=True)


def load_catalog(dbapi_connection: Any, _connection_record: Any) -> None:
    """The pool's ``connect`` event: this new connection's catalog loaded (``APP_TABLES``). A
    failure only leaves the connection as it came (its statements load what they need)."""
    from psycopg import sql

    began = time.monotonic()

    def load(cursor: Any) -> None:
        for schema, table in cursor.execute(APP_TABLES).fetchall():
            if time.monotonic() - began > CATALOG_SECONDS:
                break
            try:
                cursor.execute(sql.SQL("EXPLAIN SELECT * FROM {}").format(sql.Identifier(schema, table)))
            except Exception:  # locked, or gone since: the others still load
                log.debug("catalog of %s not loaded", table, exc_info=True)

    _outside_transactions(dbapi_connection, "loading the catalog into a new database connection", load)


def plan_statements(statements: Statements, dbapi_connection: Any, _connection_record: Any) -> None:
    """A ``connect`` event while a web process opens its connections at start: each statement run
    ``PLAN_RUNS`` times on the new connection, prepared (psycopg keeps it prepared for the app's
    own runs of the same text and value types: its ints dumped as crm/pg.py's ``connect`` event,
    registered before this one, makes them), its runs taking the values noted in turn. No run
    starts after ``PLANNING_SECONDS``; one that fails or takes over ``STATEMENT_WAIT`` leaves its
    statement to the requests."""
    began = time.monotonic()

    def plan(cursor: Any) -> None:
        cursor.execute(f"SET statement_timeout = '{STATEMENT_WAIT}'")
        try:
            for statement, values in statements:
                try:
                    for run in range(PLAN_RUNS):
                        if time.monotonic() - began > PLANNING_SECONDS:
                            return
                        cursor.execute(statement, values[run % len(values)], prepare=True)
                except Exception:  # timed out, locked: the others are still planned
                    log.debug("statement not planned: %s", statement, exc_info=True)
        finally:
            cursor.execute("RESET statement_timeout")

    _outside_transactions(dbapi_connection, "planning statements on a new database connection", plan)


def hot_statements(app: Flask, reads: Reads) -> Statements:
    """The SELECTs run by the reads ``reads`` gives, in order, each with the different values it
    ran with (``CUSTOM_PLANS`` at most). Each read runs in a savepoint of its own; a statement that
    waits over ``LOCK_WAIT`` for a lock (a migration holding a table) or ``STATEMENT_WAIT`` for a
    result fails its read. Nothing if the first read fails, or what to read can't be found, or
    the transaction fails: the connections then open without them."""
    from crm.extensions import db

    ran: dict[str, list[Any]] = {}
    noted: list[tuple[str, Any]] = []  # by the read running

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if not many and built_select(context):
            noted.append((statement, parameters))

    with app.app_context():
        try:
            connection = db.session.connection()  # the session's, for the whole transaction
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'")
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = '{STATEMENT_WAIT}'")
            chosen = reads() or []  # what to read: its own statements are not noted
            began = time.monotonic()
            event.listen(connection, "before_cursor_execute", note)
            try:
                for number, read in enumerate(chosen):
                    if number and time.monotonic() - began > READING_SECONDS:
                        log.info("planning at start: %d of %d reads done in time", number, len(chosen))
                        break
                    noted.clear()
                    try:
                        with db.session.begin_nested():
                            read()
                    except Exception:
                        if not number:
                            raise
                        log.warning("a read at start, to plan its statements, failed", exc_info=True)
                        continue
                    for statement, parameters in noted:
                        values = ran.setdefault(statement, [])
                        if len(values) < CUSTOM_PLANS and parameters not in values:
                            values.append(parameters)
            finally:
                event.remove(connection, "before_cursor_execute", note)
        except Exception:
            log.warning("reading the inbox as an agent would, to plan its statements, failed", exc_info=True)
            ran.clear()
        finally:
            db.session.remove()
    return list(ran.items())


def inbox_reads() -> list[Callable[[], object]] | None:
    """What an agent's first requests read, as the inbox's views read it (tests/ops checks that they
    run the same statements), in the newest message's workspace; None without messages. First the
    session's lookup, the inbox's first page with each row's preview, the team's members and AI
    switch and the thread of the newest message's conversation; then, each a read of its own, the
    threads of the next conversations on the list, ``CUSTOM_PLANS`` threads at most. A thread is its
    row, its newest messages and their files where they have any, and the page before them (the
    conversation's row read again, as a request of its own reads it)."""
    from sqlalchemy import select

    from crm.auth.services import load_session
    from crm.extensions import db
    from crm.inbox import listing, services
    from crm.inbox.models import Message
    from crm.inbox.team import team_facts
    from crm.pagination import cursor_after
    from crm.params import DEFAULT_LIMIT

    # Any workspace's: the conversation of the newest message, as a busy workspace's (a conversation
    # may have no message left, and an empty thread reads no page before its newest).
    newest = db.session.execute(
        select(Message.workspace_id, Message.conversation_id).order_by(Message.id.desc()).limit(1)
    ).first()
    if newest is None:
        return None
    workspace_id, conversation_id = newest
    listed = listing.filtered_conversations(workspace_id, user_id=0, limit=DEFAULT_LIMIT).items
    later = [conversation.id for conversation in listed if conversation.id != conversation_id]

    def thread(each: int) -> None:
        db.session.expunge_all()  # a request of its own
        services.open_thread(workspace_id, each)
        page = services.thread_page(workspace_id, each, None)
        if page.items:  # older messages as the agent scrolls up (none, if the thread is short)
            older = page.next_cursor or cursor_after(page.items[-1], services.THREAD_KEYS)
            db.session.expunge_all()  # the conversation is read again first
            services.thread_page(workspace_id, each, older)

    def first() -> None:
        db.session.expunge_all()  # the list read again, as its request reads it
        load_session("no such session")  # every request's first statement (crm/security.py)
        page = listing.filtered_conversations(workspace_id, user_id=0, limit=DEFAULT_LIMIT)
        listing.last_messages(workspace_id, [conversation.id for conversation in page.items])
        team_facts(workspace_id)  # read again every few seconds, on whichever connection
        thread(conversation_id)

    return [first, *(functools.partial(thread, each) for each in later[: CUSTOM_PLANS - 1])]


def open_connections(app: Flask, reads: Reads = inbox_reads) -> int:
    """On PostgreSQL, in a web process once forked: ``CONNECTIONS_AT_START`` connections (at most
    the pool's size) opened with their catalog loaded and the statements of ``reads`` planned, and
    every later new connection's catalog loaded as it opens; returns how many were opened. Never
    raises, and gives up after ``OPENING_SECONDS``: a database that is slow or cannot be reached
    does not keep the server from starting (its health check reports it)."""
    opened: list[Any] = []
    engine: Any = None
    planning: Callable[..., None] | None = None
    try:
        from sqlalchemy.pool import QueuePool

        from crm.extensions import db

        began = time.monotonic()
        with app.app_context():
            engine = db.engine
            if engine.dialect.name != "postgresql":
                return 0
            if not event.contains(engine, "connect", load_catalog):
                event.listen(engine, "connect", load_catalog)
            engine.dispose()  # a connection the caller opened before the listener has no catalog loaded
            planning = functools.partial(plan_statements, hot_statements(app, reads))
            engine.dispose()  # nor the statements planned (the one that read them)
            event.listen(engine, "connect", planning)
            pool = engine.pool
            wanted = min(CONNECTIONS_AT_START, pool.size()) if isinstance(pool, QueuePool) else 0
            while len(opened) < wanted and time.monotonic() - began < OPENING_SECONDS:
                opened.append(engine.connect())
    except Exception:
        log.warning("opening database connections at start failed", exc_info=True)
    finally:
        if planning is not None and event.contains(engine, "connect", planning):
            event.remove(engine, "connect", planning)  # later connections plan as requests run
        try:
            for connection in opened:
                connection.close()  # back to the pool, open and idle
        except Exception:
            log.warning("returning the connections opened at start failed", exc_info=True)
    return len(opened)
