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
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from sqlalchemy import event

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


def load_catalog(dbapi_connection: Any, _connection_record: Any) -> None:
    """The pool's ``connect`` event: this new connection's catalog loaded (``APP_TABLES``). A
    failure only leaves the connection as it came (its statements load what they need)."""
    from psycopg import sql

    began = time.monotonic()
    autocommit = dbapi_connection.autocommit
    try:
        dbapi_connection.autocommit = True
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = '{LOCK_WAIT}'")
            try:
                for schema, table in cursor.execute(APP_TABLES).fetchall():
                    if time.monotonic() - began > CATALOG_SECONDS:
                        break
                    try:
                        scan = sql.SQL("EXPLAIN SELECT * FROM {}").format(sql.Identifier(schema, table))
                        cursor.execute(scan)
                    except Exception:  # locked, or gone since: the others still load
                        log.debug("catalog of %s not loaded", table, exc_info=True)
            finally:
                cursor.execute("RESET lock_timeout")
    except Exception:
        log.warning("loading the catalog into a new database connection failed", exc_info=True)
    try:
        dbapi_connection.autocommit = autocommit
    except Exception:  # a broken connection: the pool finds out on its first use
        log.debug("restoring autocommit after loading the catalog failed", exc_info=True)


def open_connections(app: Flask) -> int:
    """On PostgreSQL, in a web process once forked: ``CONNECTIONS_AT_START`` connections (at most
    the pool's size) opened with their catalog loaded, and every later new connection's loaded as it
    opens; returns how many were opened. Never raises, and gives up after ``OPENING_SECONDS``: a
    database that is slow or cannot be reached does not keep the server from starting (its health
    check reports it)."""
    opened: list[Any] = []
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
            pool = engine.pool
            wanted = min(CONNECTIONS_AT_START, pool.size()) if isinstance(pool, QueuePool) else 0
            while len(opened) < wanted and time.monotonic() - began < OPENING_SECONDS:
                opened.append(engine.connect())
    except Exception:
        log.warning("opening database connections at start failed", exc_info=True)
    finally:
        for connection in opened:
            connection.close()
    return len(opened)
