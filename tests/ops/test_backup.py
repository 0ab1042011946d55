"""``flask crm backup`` / ``flask crm restore``: a backup restored into an empty database holds the
same rows and media files; damaged archives, newer schemas and targets with data are refused
before anything changes.

The restore target is always a second app with a database of its own: a fresh SQLite file, or on
PostgreSQL a ``<test database>_restore`` database this module creates and drops (never the main
test database).
"""

from __future__ import annotations

import contextvars
import io
import json
import os
import re
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from crm import create_app
from crm.extensions import db
from crm.media.storage import LocalStorage, get_storage
from crm.models import Lead, MediaFile, Message
from crm.ops import dumps
from tests import factories
from tests.conftest import BACKEND, make_test_config
from tests.services import require_service


def _head() -> str:
    from alembic.script import ScriptDirectory

    from crm.config import ROOT

    [head] = ScriptDirectory(str(ROOT / "migrations")).get_heads()
    return head


def run(app: Flask, *args: str, stdin: str | None = None) -> tuple[int, dict[str, Any] | None, str]:
    """A ``flask crm`` command of ``app`` in a context of its own (as from a shell), so a second
    app never borrows the test's app context: exit code, JSON payload, stderr."""
    db.session.commit()
    runner = app.test_cli_runner()
    result = contextvars.Context().run(runner.invoke, args=["crm", *args], input=stdin)
    lines = result.stdout.strip().splitlines()
    payload = json.loads(lines[-1]) if result.exit_code == 0 and lines else None
    return result.exit_code, payload, result.stderr.strip()


pytestmark = pytest.mark.usefixtures("media_folder")  # this test's own storage (tests/conftest.py)


# --- the restore target: a second app on an empty database --------------------------------------


def _restore_database_url(main_url: str, suffix: str = "_restore") -> str:
    url = make_url(main_url)
    return url.set(database=f"{url.database}{suffix}").render_as_string(hide_password=False)


def _recreate_database(main_url: str, name: str, *, create: bool) -> None:
    admin = create_engine(main_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            if create:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        require_service(f"cannot create the restore database: {exc.__class__.__name__}")
    finally:
        admin.dispose()


def _second_app(url: str, instance: Path, **config: Any) -> Flask:
    from crm import worker

    saved = worker._app.get("app")
    second = create_app(make_test_config(url, instance, **config))
    if saved is not None:  # tasks of the session's app keep running in it
        worker._app["app"] = saved
    return second


@pytest.fixture(scope="module")
def restore_database(database_url: str) -> Iterator[str | None]:
    """PostgreSQL: ``<test database>_restore``, created for this module and dropped after it."""
    if BACKEND != "postgresql":
        yield None
        return
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        require_service("pg_dump and pg_restore are not installed")
    url = _restore_database_url(database_url)
    name = str(make_url(url).database)
    _recreate_database(database_url, name, create=True)
    yield url
    _recreate_database(database_url, name, create=False)


def _emptied(url: str) -> str:
    """The database with nothing in it (quicker than a new database for each test)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        schemas = conn.execute(
            text(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema')"
                " AND nspname NOT LIKE 'pg\\_%'"
            )
        ).scalars()
        for schema in list(schemas):
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture
def make_target(restore_database: str | None, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Build restore targets: an app whose database (same engine as the suite's) and media folder
    are empty. PostgreSQL: the module's restore database, emptied first."""
    made: list[Flask] = []

    def make(name: str = "target", **config: Any) -> Flask:
        instance = tmp_path / name
        if restore_database is not None:
            assert not made, "one PostgreSQL target per test"
            url = _emptied(restore_database)
        else:
            url = f"sqlite:///{instance / 'crm.sqlite3'}"
        made.append(_second_app(url, instance, **config))
        return made[-1]

    yield make
    for target in made:
        with target.app_context():
            db.engine.dispose()


# --- data and reading it back --------------------------------------------------------------------


def _some_data() -> dict[str, Any]:
    owner = factories.person(workspace="Acme", email="owner@acme.example", role="owner")
    factories.lead(owner, phone="+5511988887777", name="Maria")
    factories.lead(owner, phone="+5511977776666", name="João", tags=("vip",))
    conversation_id = factories.conversation(owner)
    factories.stored_message(conversation_id, "Bom dia! Qual o preço?")
    factories.stored_message(conversation_id, "R$ 10,00", direction="out")
    media_id = factories.media_file(owner)
    media = db.session.get(MediaFile, media_id)
    assert media is not None and media.storage_key
    return {"media_key": media.storage_key, "media_bytes": _media_bytes(media.storage_key)}


def _media_bytes(key: str) -> bytes:
    storage = get_storage()
    assert isinstance(storage, LocalStorage)
    return (storage.root / key).read_bytes()


def _snapshot() -> dict[str, Any]:
    """Row counts of every table of the schema, and some rows in full."""
    counts = {
        table.name: db.session.scalar(select(func.count()).select_from(table))
        for table in db.metadata.sorted_tables
    }
    leads = [
        (lead.phone, lead.name, sorted(tag.name for tag in lead.tags))
        for lead in db.session.scalars(select(Lead).order_by(Lead.phone))
    ]
    texts = db.session.scalars(select(Message.text).order_by(Message.id)).all()
    return {"counts": counts, "leads": leads, "texts": list(texts)}


def _in(app: Flask, read: Callable[[], Any]) -> Any:
    def inside() -> Any:
        with app.app_context():
            try:
                return read()
            finally:
                db.session.remove()

    return contextvars.Context().run(inside)


def _backup(app: Flask, folder: Path, *args: str) -> Path:
    code, payload, stderr = run(app, "backup", "--output", str(folder), *args)
    assert code == 0 and payload is not None, stderr
    return Path(str(payload["path"]))


# --- round trip ------------------------------------------------------------------------------------


def test_backup_then_restore_into_an_empty_database(
    app: Flask, make_target: Callable[..., Flask], tmp_path: Path, media_folder: Path
) -> None:
    data = _some_data()
    before = _snapshot()

    code, payload, stderr = run(app, "backup", "--output", str(tmp_path / "backups"))
    assert code == 0 and payload is not None, stderr
    archive = Path(str(payload["path"]))
    assert re.fullmatch(r"zapdesk-backup-\d{8}T\d{6}Z\.tar", archive.name)
    assert payload["size_bytes"] == archive.stat().st_size and archive.stat().st_mode & 0o077 == 0
    assert payload["database"] == dumps.dialect() and payload["alembic_revision"] == _head()
    stored = [p for p in media_folder.rglob("*") if p.is_file()]
    assert payload["media_files"] == len(stored) >= 1
    assert payload["tables"] >= len(before["counts"]) and payload["secret_key_included"] is False
    assert any("SECRET_KEY" in note for note in payload["notes"])
    assert [p.name for p in archive.parent.iterdir()] == [archive.name]  # no temporary left over

    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert names[-1] == "manifest.json" and f"media/{data['media_key']}" in names
    assert manifest["format"] == "zapdesk-backup" and manifest["created_at"].endswith("Z")
    assert set(manifest["files"]) == set(names) - {"manifest.json"}
    counted = {name.rsplit(".", 1)[-1]: n for name, n in manifest["row_counts"].items()}
    assert {name: counted[name] for name in before["counts"]} == before["counts"]

    target = make_target()
    code, restored, stderr = run(target, "restore", str(archive), "--yes")
    assert code == 0 and restored is not None, stderr
    assert restored["alembic_revision"] == _head() and restored["upgrade_needed"] is False
    assert restored["tables"] == payload["tables"] and restored["rows"] == payload["rows"]
    assert restored["media_files"] == len(stored) and restored["replaced_existing_data"] is False
    assert restored["encryption_key_matches"] is True

    assert _in(target, _snapshot) == before
    assert _in(target, lambda: _media_bytes(data["media_key"])) == data["media_bytes"]


def test_a_target_with_data_is_refused_unless_forced(
    app: Flask, make_target: Callable[..., Flask], tmp_path: Path
) -> None:
    _some_data()
    archive = _backup(app, tmp_path / "backups")
    target = make_target()
    assert run(target, "restore", str(archive), "--yes")[0] == 0
    stray = Path(target.config["INSTANCE_PATH"]) / "media" / "w9" / "stray.bin"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not in the backup")
    _in(target, lambda: (factories.lead(_owner(), phone="+5511966665555", name="Nova"), None))
    with_extra = _in(target, _snapshot)

    code, payload, stderr = run(target, "restore", str(archive), "--yes")
    assert code == 1 and payload is None
    assert "not empty" in stderr and "--force" in stderr and len(stderr.splitlines()) == 1
    assert _in(target, _snapshot) == with_extra and stray.exists()  # nothing changed

    code, payload, stderr = run(target, "restore", str(archive), "--force", stdin="n\n")
    assert code == 1 and "cancelled" in stderr and _in(target, _snapshot) == with_extra

    code, payload, stderr = run(target, "restore", str(archive), "--force", "--yes")
    assert code == 0 and payload is not None, stderr
    assert payload["replaced_existing_data"] is True
    assert _in(target, _snapshot) == _snapshot() and not stray.exists()


def _owner() -> factories.Person:
    from crm.auth.models import Membership

    membership = db.session.scalar(select(Membership).order_by(Membership.id).limit(1))
    assert membership is not None
    return factories.Person(membership.user_id, membership.workspace_id, membership.id, "")


# --- refusals: nothing changes -----------------------------------------------------------------


def _rewrite(
    archive: Path, dest: Path, change: Callable[[str, bytes], bytes], rename: dict[str, str] | None = None
) -> Path:
    with tarfile.open(archive) as src, tarfile.open(dest, "w") as out:
        for member in src:
            fh = src.extractfile(member)
            assert fh is not None
            data = change(member.name, fh.read())
            member.size = len(data)
            member.name = (rename or {}).get(member.name, member.name)
            out.addfile(member, io.BytesIO(data))
    return dest


def _edit_manifest(**changes: Any) -> Callable[[str, bytes], bytes]:
    def change(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        manifest.update(changes)
        return json.dumps(manifest).encode()

    return change


def _forget_media_files(name: str, data: bytes) -> bytes:
    if name != "manifest.json":
        return data
    manifest = json.loads(data)
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("media/")}
    return json.dumps(manifest).encode()


def _flip_media_byte(name: str, data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1]) if name.startswith("media/") else data


DAMAGE: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "missing file": (lambda archive, tmp: tmp / "nope.tar", "No backup file"),
    "not a tar": (lambda archive, tmp: _written(tmp / "x.tar", b"hello" * 300), "not a tar archive"),
    "truncated": (
        lambda archive, tmp: _written(tmp / "t.tar", archive.read_bytes()[: archive.stat().st_size // 2]),
        "truncated",
    ),
    "changed media file": (
        lambda archive, tmp: _rewrite(archive, tmp / "c.tar", _flip_media_byte),
        "checksum of media/",
    ),
    "member missing from the manifest": (
        lambda archive, tmp: _rewrite(archive, tmp / "m.tar", _forget_media_files),
        "do not match the manifest",
    ),
    "newer schema": (
        lambda archive, tmp: _rewrite(archive, tmp / "n.tar", _edit_manifest(alembic_revision="9999_newer")),
        "newer version of Zapdesk",
    ),
    "newer format": (
        lambda archive, tmp: _rewrite(archive, tmp / "f.tar", _edit_manifest(format_version=99)),
        "newer version of Zapdesk",
    ),
    "entry outside the media folder": (
        lambda archive, tmp: _rewrite(
            archive, tmp / "o.tar", lambda n, d: d, rename=_escaping_names(archive)
        ),
        "unexpected entry media/../",
    ),
    "another engine": (lambda archive, tmp: _other_engine(archive, tmp / "e.tar"), "configured database is"),
}

MEMBERS = {"postgresql": "database.pgdump", "sqlite": "database.sqlite3"}


def _other_engine(archive: Path, dest: Path) -> Path:
    """The archive as if made on the other database engine (consistent, checksums right)."""
    this = dumps.dialect()
    other = "sqlite" if this == "postgresql" else "postgresql"

    def change(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        manifest["database"].update(dialect=other, member=MEMBERS[other])
        manifest["files"][MEMBERS[other]] = manifest["files"].pop(MEMBERS[this])
        return json.dumps(manifest).encode()

    return _rewrite(archive, dest, change, rename={MEMBERS[this]: MEMBERS[other]})


def _escaping_names(archive: Path) -> dict[str, str]:
    with tarfile.open(archive) as tar:
        media = [name for name in tar.getnames() if name.startswith("media/")]
    return {media[0]: "media/../../escaped.bin"}


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_bad_archives_are_refused_and_nothing_changes(
    app: Flask, make_target: Callable[..., Flask], tmp_path: Path, damage: str
) -> None:
    _some_data()
    archive = _backup(app, tmp_path / "backups")
    make_bad, message = DAMAGE[damage]
    bad = make_bad(archive, tmp_path)
    target = make_target()

    code, payload, stderr = run(target, "restore", str(bad), "--yes")
    assert code == 1 and payload is None and len(stderr.splitlines()) == 1
    assert message in stderr, stderr
    assert _target_is_untouched(target)


def _target_is_untouched(target: Flask) -> bool:
    def empty() -> bool:
        state = dumps.postgresql_state() if dumps.dialect() == "postgresql" else dumps.sqlite_state()
        media = get_storage()
        return not state.schemas_in_use and not list(media.stored_keys())

    return bool(_in(target, empty))


# --- schema revisions, the secret key, S3 media (SQLite files: no server needed) ---------------------


def _sqlite_app(tmp_path: Path, name: str, **config: Any) -> Flask:
    instance = tmp_path / name
    return _second_app(f"sqlite:///{instance / 'crm.sqlite3'}", instance, **config)


def _upgraded(app: Flask, revision: str = "head") -> Flask:
    from flask_migrate import upgrade

    def inside() -> None:
        with app.app_context():
            upgrade(revision=revision)
            db.engine.dispose()

    contextvars.Context().run(inside)
    return app


def test_an_older_backup_is_restored_and_says_to_upgrade(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    from crm.config import ROOT

    previous = ScriptDirectory(str(ROOT / "migrations")).get_revision(_head()).down_revision
    assert isinstance(previous, str)
    source = _upgraded(_sqlite_app(tmp_path, "old"), previous)
    archive = _backup(source, tmp_path / "backups")
    target = _sqlite_app(tmp_path, "new")

    code, payload, stderr = run(target, "restore", str(archive), "--yes")
    assert code == 0 and payload is not None, stderr
    assert payload["alembic_revision"] == previous and payload["upgrade_needed"] is True
    assert any("flask db upgrade" in note for note in payload["notes"])


def test_a_database_without_schema_is_not_backed_up(tmp_path: Path) -> None:
    code, _, stderr = run(_sqlite_app(tmp_path, "blank"), "backup", "--output", str(tmp_path / "b"))
    assert code == 1 and "flask db upgrade" in stderr
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_the_secret_key_is_left_out_unless_asked_for(tmp_path: Path) -> None:
    source = _upgraded(_sqlite_app(tmp_path, "src", SECRET_KEY="generated-key"))
    (Path(source.config["INSTANCE_PATH"]) / "secret_key").write_text("generated-key\n")
    archive = _backup(source, tmp_path / "backups", "--include-secret-key")
    with tarfile.open(archive) as tar:
        assert "secret_key" in tar.getnames()

    # The target runs with another key: restoring the backup's key makes them match again.
    target = _sqlite_app(tmp_path, "dst", SECRET_KEY="other-key")
    key_file = Path(target.config["INSTANCE_PATH"]) / "secret_key"
    key_file.write_text("other-key\n")
    code, payload, stderr = run(target, "restore", str(archive), "--yes")
    assert code == 0 and payload is not None, stderr
    assert payload["secret_key_restored"] is True and payload["encryption_key_matches"] is True
    assert key_file.read_text() == "generated-key" and (key_file.stat().st_mode & 0o077) == 0
    [kept] = key_file.parent.glob("secret_key.replaced-*")
    assert kept.read_text() == "other-key\n"

    # Without the key in the backup, a different key in use is reported.
    plain = _backup(source, tmp_path / "plain")
    other = _sqlite_app(tmp_path, "dst2", SECRET_KEY="other-key")
    code, payload, _ = run(other, "restore", str(plain), "--yes")
    assert payload is not None and payload["encryption_key_matches"] is False
    assert any("SECRET_KEY" in note for note in payload["notes"])


def test_include_secret_key_refuses_a_key_from_the_environment(tmp_path: Path) -> None:
    source = _upgraded(_sqlite_app(tmp_path, "env"))  # the key is in the config, no file holds it
    code, _, stderr = run(source, "backup", "--output", str(tmp_path / "b"), "--include-secret-key")
    assert code == 1 and "environment" in stderr and len(stderr.splitlines()) == 1


def _session_file(app: Flask, account_id: int, value: str) -> Path:
    """A WhatsApp Web session store as the gateway keeps it in embedded mode (a SQLite file)."""
    import sqlite3
    from contextlib import closing

    path = Path(app.config["INSTANCE_PATH"]) / "webqr" / f"account-{account_id}.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS whatsmeow_device (jid TEXT)")
        conn.execute("INSERT INTO whatsmeow_device VALUES (?)", (value,))
    return path


def _session_values(path: Path) -> list[str]:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(path)) as conn:
        return [jid for (jid,) in conn.execute("SELECT jid FROM whatsmeow_device")]


def test_whatsapp_web_sessions_of_embedded_mode_come_back(tmp_path: Path) -> None:
    source = _upgraded(_sqlite_app(tmp_path, "src"))
    _session_file(source, 1, "5511999990000@s.whatsapp.net")
    archive = _backup(source, tmp_path / "backups")
    with tarfile.open(archive) as tar:
        assert "webqr/account-1.sqlite3" in tar.getnames()

    target = _sqlite_app(tmp_path, "dst")
    stale = _session_file(target, 1, "someone-else@s.whatsapp.net")
    code, _, stderr = run(target, "restore", str(archive), "--yes")
    assert code == 1 and "not empty" in stderr and _session_values(stale) == ["someone-else@s.whatsapp.net"]

    code, payload, stderr = run(target, "restore", str(archive), "--yes", "--force")
    assert code == 0 and payload is not None, stderr
    assert payload["webqr_session_files"] == 1
    assert _session_values(stale) == ["5511999990000@s.whatsapp.net"] and stale.stat().st_mode & 0o077 == 0


class _Bucket:
    """Stands for S3 media storage: files that must stay where they are."""

    name = "s3"

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def stored_keys(self) -> Iterator[tuple[str, Any]]:
        yield "w1/2026/01/kept.jpg", None

    def delete(self, key: str) -> None:
        self.deleted.append(key)


def test_s3_media_stay_in_the_bucket(tmp_path: Path) -> None:
    source = _upgraded(_sqlite_app(tmp_path, "s3src"))
    source.extensions["media_storage"] = _Bucket()
    code, payload, stderr = run(source, "backup", "--output", str(tmp_path / "b"))
    assert code == 0 and payload is not None, stderr
    assert payload["media_files"] == 0 and any("S3" in note for note in payload["notes"])
    with tarfile.open(str(payload["path"])) as tar:
        assert not [name for name in tar.getnames() if name.startswith("media/")]

    target = _upgraded(_sqlite_app(tmp_path, "s3dst"))
    bucket = _Bucket()
    target.extensions["media_storage"] = bucket
    code, restored, stderr = run(target, "restore", str(payload["path"]), "--yes", "--force")
    assert code == 0 and restored is not None, stderr
    assert bucket.deleted == [] and any("S3" in note for note in restored["notes"])


def test_the_database_password_never_reaches_a_command_line(tmp_path: Path) -> None:
    url = "postgresql+psycopg://zapdesk:s3cr%40t@db.internal:6543/zapdesk?sslmode=require"
    app = _second_app(url, tmp_path / "pg")

    def inside() -> tuple[str, dict[str, str]]:
        with app.app_context():
            return dumps._libpq()

    conninfo, env = contextvars.Context().run(inside)
    assert "s3cr" not in conninfo and env["PGPASSWORD"] == "s3cr@t"
    assert all(
        part in conninfo for part in ("host=db.internal", "port=6543", "dbname=zapdesk", "sslmode=require")
    )


def test_a_failed_backup_leaves_no_file(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(dest: Path) -> dumps.DumpInfo:
        dest.write_bytes(b"half")
        raise dumps.BackupError("pg_dump failed: disk full")

    monkeypatch.setattr(dumps, f"dump_{dumps.dialect()}", broken)
    code, _, stderr = run(app, "backup", "--output", str(tmp_path / "b"))
    assert (code, stderr) == (1, "error: pg_dump failed: disk full")
    assert list((tmp_path / "b").iterdir()) == []


def test_a_database_in_use_is_not_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A running Zapdesk holds locks: ``--force`` says to stop it instead of waiting forever."""
    main_url = os.environ.get("TEST_DATABASE_URL")
    if not main_url:
        require_service("TEST_DATABASE_URL is not set: PostgreSQL restores are not checked")
    assert main_url is not None
    url = _restore_database_url(main_url, "_restore_locked")
    name = str(make_url(url).database)
    _recreate_database(main_url, name, create=True)
    target = _second_app(url, tmp_path / "locked")
    other = create_engine(url)
    try:
        with other.connect() as conn:
            conn.execute(text("CREATE TABLE leads (id integer)"))
            conn.commit()
            conn.execute(text("SELECT * FROM leads"))  # a reader keeps its lock until it ends
            monkeypatch.setattr(dumps, "LOCK_TIMEOUT_MS", 200)

            def clear() -> None:
                with target.app_context():
                    dumps.clear_postgresql(["public"])

            with pytest.raises(dumps.BackupError, match="in use"):
                contextvars.Context().run(clear)
            conn.rollback()
            assert conn.execute(text("SELECT count(*) FROM leads")).scalar_one() == 0  # still there
    finally:
        other.dispose()
        with target.app_context():
            db.engine.dispose()
        _recreate_database(main_url, name, create=False)
