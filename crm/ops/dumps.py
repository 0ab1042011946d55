"""The database half of backups: dump and load PostgreSQL (pg_dump/pg_restore) or SQLite (the
online backup API), and count what is in a database so a restore can be checked against its backup.

PostgreSQL counts and the dump come from one exported snapshot, so the manifest describes exactly
the rows in the dump even while the app keeps writing.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from crm.errors import DomainError
from crm.extensions import db


class BackupError(DomainError):
    """A backup or restore that cannot go ahead; raised before anything is changed, unless its
    message says otherwise."""

    code = "backup_failed"


@dataclass(frozen=True)
class DumpInfo:
    revision: str
    row_counts: dict[str, int]
    details: dict[str, str]


def dialect() -> str:
    return db.engine.dialect.name


def display_url() -> str:
    """The configured database, password hidden, for messages."""
    return db.engine.url.render_as_string(hide_password=True)


# --- PostgreSQL ---------------------------------------------------------------------------------

# Tables counted: plain and partitioned parents (a partition's rows are counted in its parent).
_PG_TABLES = (
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition"
    " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
    " ORDER BY 1, 2"
)
# Schemas that hold anything pg_restore would collide with.
_PG_SCHEMAS_IN_USE = (
    "SELECT DISTINCT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
    " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
    " ORDER BY 1"
)


def _pg_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            _("%(tool)s is not installed: install the PostgreSQL client of the server's version.", tool=name)
        )
    return path


def _libpq() -> tuple[str, dict[str, str]]:
    """The app's own connection parameters as a libpq conninfo string, and the environment for the
    tools: the password goes in PGPASSWORD, never on a command line (where `ps` shows it)."""
    from psycopg.conninfo import make_conninfo

    engine = db.engine
    _args, params = engine.dialect.create_connect_args(engine.url)
    params = {k: str(v) for k, v in params.items() if isinstance(v, str | int) and v != ""}
    env = dict(os.environ, PGAPPNAME="zapdesk-backup")
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = password
    return make_conninfo("", **params), env


def _run_tool(args: list[str], env: dict[str, str]) -> str:
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    except OSError as exc:
        raise BackupError(
            _("%(tool)s could not run: %(error)s", tool=Path(args[0]).name, error=exc)
        ) from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise BackupError(
            _(
                "%(tool)s failed: %(error)s",
                tool=Path(args[0]).name,
                error=lines[-1] if lines else done.returncode,
            )
        )
    return done.stdout


def _quoted(conn: Connection, *names: str) -> str:
    quote = conn.dialect.identifier_preparer.quote
    return ".".join(quote(name) for name in names)


def _pg_counts(conn: Connection) -> dict[str, int]:
    counts = {}
    for schema, table in conn.execute(text(_PG_TABLES)).all():
        sql = f"SELECT count(*) FROM {_quoted(conn, schema, table)}"  # noqa: S608 (quoted catalogue names)
        counts[f"{schema}.{table}"] = int(conn.execute(text(sql)).scalar_one())
    return counts


def _revision(conn: Connection) -> str | None:
    if conn.dialect.name == "postgresql":
        exists = conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar_one()
    else:
        exists = conn.execute(
            text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'")
        ).first()
    if not exists:
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalars().first()


def _no_schema() -> BackupError:
    return BackupError(_("The database has no Zapdesk schema yet: run `flask db upgrade` first."))


def dump_postgresql(dest: Path) -> DumpInfo:
    """``pg_dump --format=custom`` of the configured database, from a snapshot that the row counts
    are read from too (a read-only REPEATABLE READ transaction held open during the dump)."""
    pg_dump = _pg_tool("pg_dump")
    conninfo, env = _libpq()
    tool_version = _run_tool([pg_dump, "--version"], env).strip()
    options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    with db.engine.connect().execution_options(**options) as conn, conn.begin():
        snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        revision = _revision(conn)
        if revision is None:
            raise _no_schema()
        counts = _pg_counts(conn)
        server = str(conn.execute(text("SHOW server_version")).scalar_one())
        _run_tool(
            [
                pg_dump,
                "--format=custom",
                "--no-password",
                f"--snapshot={snapshot}",
                f"--file={dest}",
                f"--dbname={conninfo}",
            ],
            env,
        )
    return DumpInfo(revision, counts, {"server_version": server, "dump_tool": tool_version})


@dataclass(frozen=True)
class TargetState:
    """What the restore target holds: tables with rows (other than Alembic's bookkeeping) make it
    "not empty"; schemas in use must be cleared before pg_restore can create the dump's objects."""

    tables_with_rows: list[str]
    schemas_in_use: list[str]
    exists: bool = True


def _has_rows(conn: Connection, qualified: str) -> bool:
    sql = f"SELECT EXISTS (SELECT 1 FROM {qualified})"  # noqa: S608 (quoted catalogue names)
    return bool(conn.execute(text(sql)).scalar_one())


def postgresql_state() -> TargetState:
    with db.engine.connect() as conn:
        with_rows = [
            f"{schema}.{table}"
            for schema, table in conn.execute(text(_PG_TABLES)).all()
            if table != "alembic_version" and _has_rows(conn, _quoted(conn, schema, table))
        ]
        schemas = list(conn.execute(text(_PG_SCHEMAS_IN_USE)).scalars())
    return TargetState(with_rows, schemas)


def clear_postgresql(schemas: list[str]) -> None:
    """Drop the schemas that hold the old data, so the dump's objects can be created again; the
    ``public`` schema is recreated empty because pg_dump assumes it exists."""
    from sqlalchemy.exc import OperationalError

    try:
        with db.engine.begin() as conn:
            # A running web or worker process holds locks on the tables: say so instead of waiting.
            conn.execute(text(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS:d}"))
            for schema in schemas:
                conn.execute(text(f"DROP SCHEMA {_quoted(conn, schema)} CASCADE"))
            conn.execute(text("CREATE SCHEMA IF NOT EXISTS public"))
    except OperationalError:
        raise BackupError(
            _("The database is in use: stop Zapdesk (web, worker and gateway), then restore again.")
        ) from None
    finally:
        db.engine.dispose()


LOCK_TIMEOUT_MS = 10_000

# An extension's comment can only be set by its owner: a database user that did not create the
# extension (it was there already) would fail the whole restore on a comment.
_EXTENSION_COMMENT = re.compile(r"^\d+; \d+ \d+ COMMENT - EXTENSION ")


def load_postgresql(dump: Path, work: Path) -> None:
    """``pg_restore`` in one transaction: it either restores everything or leaves the database as
    it found it. Objects get the restoring user as owner (``--no-owner``), no grants are copied."""
    pg_restore = _pg_tool("pg_restore")
    conninfo, env = _libpq()
    listing = _run_tool([pg_restore, "--list", str(dump)], env)
    kept = [line for line in listing.splitlines() if not _EXTENSION_COMMENT.match(line)]
    use_list = work / "restore.list"
    use_list.write_text("\n".join(kept) + "\n", encoding="utf-8")
    db.engine.dispose()
    _run_tool(
        [
            pg_restore,
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            "--no-password",
            f"--use-list={use_list}",
            f"--dbname={conninfo}",
            str(dump),
        ],
        env,
    )
    # pg_restore brings no planner statistics: without them the first queries plan blind.
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))


def postgresql_counts() -> dict[str, int]:
    with db.engine.connect() as conn:
        return _pg_counts(conn)


# --- SQLite -------------------------------------------------------------------------------------


def sqlite_path() -> Path:
    name = make_url(db.engine.url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        raise BackupError(_("Only a SQLite database in a file can be backed up or restored."))
    return Path(name)


@contextmanager
def _sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(path, timeout=30)) as conn:
        yield conn


def _sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        " ORDER BY name"
    )
    return [name for (name,) in rows]


def _sqlite_quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sqlite_counts(path: Path) -> dict[str, int]:
    with _sqlite(path) as conn:
        return {
            name: conn.execute(f"SELECT count(*) FROM {_sqlite_quoted(name)}").fetchone()[0]  # noqa: S608
            for name in _sqlite_tables(conn)
        }


def sqlite_revision(path: Path) -> str | None:
    with _sqlite(path) as conn:
        if "alembic_version" not in _sqlite_tables(conn):
            return None
        row: Any = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return str(row[0]) if row else None


def copy_sqlite(source: Path, dest: Path) -> None:
    """A consistent copy through SQLite's online backup API (safe while the app writes: the copy is
    one read transaction), made self-contained (no WAL file beside it)."""
    with _sqlite(source) as src, _sqlite(dest) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")


def dump_sqlite(dest: Path) -> DumpInfo:
    """The configured SQLite database, copied online; counted from the copy."""
    source = sqlite_path()
    if not source.is_file():
        raise _no_schema()
    copy_sqlite(source, dest)
    revision = sqlite_revision(dest)
    if revision is None:
        raise _no_schema()
    return DumpInfo(revision, sqlite_counts(dest), {"sqlite_version": sqlite3.sqlite_version})


def sqlite_state() -> TargetState:
    path = sqlite_path()
    if not path.exists():
        return TargetState([], [], exists=False)
    with _sqlite(path) as conn:
        tables = _sqlite_tables(conn)
        with_rows = [
            name
            for name in tables
            if name != "alembic_version"
            and conn.execute(f"SELECT EXISTS (SELECT 1 FROM {_sqlite_quoted(name)})").fetchone()[0]  # noqa: S608
        ]
    return TargetState(with_rows, ["main"] if tables else [])


def load_sqlite(copy: Path, target: Path | None = None) -> None:
    """Copy the backup's pages over the configured file (or ``target``) with the online backup API:
    SQLite itself replaces the whole content under its lock and keeps the WAL consistent (copying
    the file over a database with a WAL beside it would mix the two)."""
    target = target or sqlite_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    db.engine.dispose()
    with _sqlite(copy) as src, _sqlite(target) as dst:
        src.backup(dst)
