"""``flask crm restore``: check a backup archive completely, then put it back into the configured
database and media storage, and compare the restored rows with the manifest.

Everything that can make a restore refuse (a missing or damaged file, a wrong checksum, a backup
from a newer Zapdesk, another database engine, a target that already holds data) is checked
before anything is changed. A target holding data is replaced only with ``force``, and then
explicitly: its tables are dropped and its media files deleted first.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy.exc import OperationalError

from crm.media.storage import LocalStorage, MediaStorage, get_storage
from crm.ops import dumps
from crm.ops.archive import (
    MEDIA_PREFIX,
    SECRET_KEY_MEMBER,
    WEBQR_PREFIX,
    Archive,
    HashingReader,
    check_member,
    damaged,
    extract_member,
    verify_archive,
)
from crm.ops.backup import encryption_material, key_check, secret_key_file, webqr_folder
from crm.ops.dumps import BackupError, TargetState


def _needs_upgrade(revision: str) -> bool:
    """False when the backup is at this code's newest revision, True when it is older (the schema
    is upgraded after the restore); a revision this code does not know is from a newer Zapdesk."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    script = ScriptDirectory(current_app.extensions["migrate"].directory)
    heads = script.get_heads()
    if revision in heads:
        return False
    try:
        known = script.get_revision(revision)
    except CommandError:
        known = None
    if known is None or known.revision != revision:
        raise BackupError(
            _(
                "This backup was made by a newer version of Zapdesk (database revision %(revision)s; this "
                "version knows up to %(head)s): upgrade Zapdesk first, then restore.",
                revision=revision,
                head=", ".join(heads),
            )
        )
    return True


@dataclass
class RestorePlan:
    """What a restore is about to do, for the confirmation question."""

    archive: Archive
    target: str
    media_target: str
    state: TargetState
    media_to_delete: list[str]
    webqr_to_delete: list[Path]

    @property
    def replaces_data(self) -> bool:
        # An empty session file is only a placeholder the gateway made for a number never scanned.
        sessions = [path for path in self.webqr_to_delete if path.stat().st_size > 0]
        return bool(self.state.tables_with_rows or self.media_to_delete or sessions)

    def question(self) -> str:
        question = _(
            "Restore the backup of %(created)s into %(target)s (media: %(media)s)?",
            created=self.archive.manifest.get("created_at", "?"),
            target=self.target,
            media=self.media_target,
        )
        if self.replaces_data:
            question += " " + _(
                "This DELETES what is there now: %(tables)d tables with rows, %(files)d media files and "
                "%(sessions)d WhatsApp Web session files.",
                tables=len(self.state.tables_with_rows),
                files=len(self.media_to_delete),
                sessions=len(self.webqr_to_delete),
            )
        return question


@dataclass
class RestoreResult:
    archive: Path
    dialect: str
    revision: str
    upgrade_needed: bool
    row_counts: dict[str, int]
    media_files: int
    webqr_session_files: int
    replaced_data: bool
    secret_key_restored: bool
    key_matches: bool
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "restored": str(self.archive),
            "database": self.dialect,
            "alembic_revision": self.revision,
            "upgrade_needed": self.upgrade_needed,
            "tables": len(self.row_counts),
            "rows": sum(self.row_counts.values()),
            "media_files": self.media_files,
            "webqr_session_files": self.webqr_session_files,
            "replaced_existing_data": self.replaced_data,
            "secret_key_restored": self.secret_key_restored,
            "encryption_key_matches": self.key_matches,
            "notes": self.notes,
        }


def _target_state(archive: Archive) -> TargetState:
    try:
        state = dumps.postgresql_state() if archive.dialect == "postgresql" else dumps.sqlite_state()
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else exc.__class__.__name__
        raise BackupError(_("The database cannot be reached: %(error)s", error=reason)) from None
    if archive.dialect == "postgresql":
        # Only schemas the backup recreates are dropped: anything else in the database is not ours.
        ours = {name.split(".", 1)[0] for name in archive.row_counts}
        foreign = [schema for schema in state.schemas_in_use if schema not in ours]
        if foreign:
            raise BackupError(
                _(
                    "The database also holds schema %(schema)s, which is not in the backup: restore into "
                    "a database of its own.",
                    schema=foreign[0],
                )
            )
    return state


def _media_target(storage: MediaStorage) -> str:
    return str(storage.root) if isinstance(storage, LocalStorage) else storage.name.upper()


def plan_restore(archive: Archive, *, force: bool) -> RestorePlan:
    """Refuse a target that holds data unless ``force``; change nothing."""
    if archive.dialect != dumps.dialect():
        raise BackupError(
            _(
                "This backup holds a %(backup)s database but the configured database is %(target)s.",
                backup=archive.dialect,
                target=dumps.dialect(),
            )
        )
    state = _target_state(archive)
    storage = get_storage()
    existing = [key for key, _mtime in storage.stored_keys()] if archive.media_included else []
    sessions = sorted(webqr_folder().glob("account-*.sqlite3")) if archive.dialect == "sqlite" else []
    plan = RestorePlan(archive, dumps.display_url(), _media_target(storage), state, existing, sessions)
    if plan.replaces_data and not force:
        where = ", ".join(state.tables_with_rows[:3]) or (
            _media_target(storage) if existing else str(webqr_folder())
        )
        raise BackupError(
            _(
                "The target is not empty (%(where)s): restore into an empty database and media folder, "
                "or add --force to delete what is there first.",
                where=where,
            )
        )
    return plan


def _remove_sessions(paths: list[Path]) -> None:
    for path in paths:
        for suffix in ("", "-wal", "-shm", "-journal"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)


def _write_session(source: IO[bytes], archive: Archive, name: str) -> None:
    """A WhatsApp Web session file, private to the app's user like the gateway makes them."""
    folder = webqr_folder()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / name.removeprefix(WEBQR_PREFIX)
    _remove_sessions([path])
    reader = HashingReader(source)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        shutil.copyfileobj(reader, out, 1024 * 1024)
    check_member(archive, name, reader)


def _restore_files(archive: Archive, storage: MediaStorage) -> tuple[int, int, str | None]:
    """The media files into the configured storage (local folder or S3), WhatsApp Web session
    files (embedded mode) and the secret key."""
    import mimetypes

    files = sessions = 0
    secret = None
    with tarfile.open(archive.path, "r:*") as tar:
        for member in tar:
            source = tar.extractfile(member)
            if source is None:
                continue
            if member.name == SECRET_KEY_MEMBER:
                secret = source.read().decode().strip()
            elif member.name.startswith(WEBQR_PREFIX):
                _write_session(source, archive, member.name)
                sessions += 1
            elif member.name.startswith(MEDIA_PREFIX):
                key = member.name.removeprefix(MEDIA_PREFIX)
                reader = HashingReader(source)
                kind = mimetypes.guess_type(key)[0] or "application/octet-stream"
                storage.save(key, reader, kind)  # type: ignore[arg-type]  # only .read() is used
                check_member(archive, member.name, reader)
                files += 1
    return files, sessions, secret


def _install_secret_key(key: str) -> list[str]:
    """Write the backup's key as the instance's key; a different key already there is kept beside
    it (renamed), never overwritten. Notes for the operator."""
    path = secret_key_file()
    notes = [_("The secret key was restored into %(path)s: restart Zapdesk to use it.", path=path)]
    if os.environ.get("SECRET_KEY"):
        notes.append(
            _("SECRET_KEY is set in the environment and takes precedence over the restored key file.")
        )
    if path.is_file() and path.read_text().strip() == key:
        return notes
    if path.exists():
        kept = path.with_name(f"secret_key.replaced-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
        path.rename(kept)
        notes.append(_("The previous key file was kept as %(path)s.", path=kept))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return notes


def _check_counts(archive: Archive) -> dict[str, int]:
    """The restored database's row counts, which must be the manifest's."""
    if archive.dialect == "postgresql":
        counts = dumps.postgresql_counts()
    else:
        counts = dumps.sqlite_counts(dumps.sqlite_path())
    expected = archive.row_counts
    different = sorted(
        name for name in expected.keys() | counts.keys() if expected.get(name) != counts.get(name)
    )
    if different:
        raise BackupError(
            _(
                "The backup was restored but the row counts differ from its manifest (%(tables)s): "
                "do not use this database.",
                tables=", ".join(different[:5]),
            )
        )
    return counts


def _key_matches(archive: Archive, restored_key: str | None) -> bool:
    """Whether the key that will encrypt secrets after a restart is the one the backup was made with."""
    material = current_app.config.get("ENCRYPTION_KEY") or (
        restored_key
        if restored_key is not None and not os.environ.get("SECRET_KEY")
        else encryption_material()
    )
    return key_check(material) == archive.manifest.get("encryption_key_check")


def _load_database(archive: Archive, plan: RestorePlan) -> None:
    instance = Path(current_app.config["INSTANCE_PATH"])
    instance.mkdir(parents=True, exist_ok=True)
    member = archive.manifest["database"]["member"]
    with tempfile.TemporaryDirectory(dir=instance, prefix=".restore-") as work:
        copy = Path(work) / member
        extract_member(archive, member, copy)  # before the target is touched: a full disk stops here
        if archive.dialect == "sqlite":
            if dumps.sqlite_revision(copy) != archive.revision:
                raise damaged(archive.path, _("its database does not match the manifest"))
            dumps.load_sqlite(copy)
            return
        if plan.state.schemas_in_use:
            dumps.clear_postgresql(plan.state.schemas_in_use)
        try:
            dumps.load_postgresql(copy, Path(work))
        except BackupError as exc:
            if not plan.state.schemas_in_use:
                raise
            raise BackupError(
                _("%(error)s The tables that were there had been dropped already.", error=exc.message)
            ) from None


def restore_backup(path: Path, *, force: bool, confirm: Callable[[RestorePlan], bool]) -> RestoreResult:
    """Verify, plan, ask, then restore the database, the media files and the secret key (when the
    backup holds one), and check the restored row counts against the manifest."""
    archive = verify_archive(path)
    upgrade_needed = _needs_upgrade(archive.revision)
    plan = plan_restore(archive, force=force)
    if not confirm(plan):
        raise BackupError(_("Restore cancelled; nothing was changed. Add --yes to restore without asking."))

    _load_database(archive, plan)
    storage = get_storage()
    for key in plan.media_to_delete:
        storage.delete(key)
    _remove_sessions(plan.webqr_to_delete)
    media_files, sessions, secret = _restore_files(archive, storage)
    counts = _check_counts(archive)
    notes = _install_secret_key(secret) if secret is not None else []
    key_matches = _key_matches(archive, secret)
    if not key_matches:
        notes.append(
            _(
                "The key in use is not the one this backup was made with: the stored Cloud API tokens, "
                "app secrets and Gemini keys cannot be read until SECRET_KEY (or ENCRYPTION_KEY) is the "
                "original."
            )
        )
    if upgrade_needed:
        notes.append(
            _("This backup is from an older version: run `flask db upgrade` before starting Zapdesk.")
        )
    if not archive.media_included:
        notes.append(
            _(
                "Media files were not in this backup (they were stored in %(storage)s): they are read from "
                "there as before.",
                storage=str(archive.manifest["media"].get("storage", "?")).upper(),
            )
        )
    return RestoreResult(
        archive=archive.path,
        dialect=archive.dialect,
        revision=archive.revision,
        upgrade_needed=upgrade_needed,
        row_counts=counts,
        media_files=media_files,
        webqr_session_files=sessions,
        replaced_data=plan.replaces_data,
        secret_key_restored=secret is not None,
        key_matches=key_matches,
        notes=notes,
    )
