"""``flask crm backup``: one tar archive holding the database dump, the local media files, in
embedded mode the WhatsApp Web session files, and a manifest (format, time, database, Alembic
revision, row counts, a SHA-256 per member).

The archive is written under a temporary name in the destination folder and renamed when
complete, so a backup folder never holds half an archive under a real name. The secret key is
left out unless asked for: whoever holds the key and the archive can read the stored access tokens.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from flask import current_app
from flask_babel import gettext as _

from crm.ops import dumps
from crm.ops.archive import (
    DATABASE_MEMBER,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MEDIA_PREFIX,
    SECRET_KEY_MEMBER,
    WEBQR_FILE,
    WEBQR_PREFIX,
    HashingReader,
)
from crm.ops.dumps import BackupError


def app_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zapdesk")
    except PackageNotFoundError:
        return "unknown"


def key_check(material: str) -> str:
    """A fingerprint of the key that encrypts stored secrets, to tell at restore time whether the
    running key is the one the backup was made with (the key itself is never written)."""
    return hashlib.sha256(b"zapdesk backup key check v1\0" + material.encode()).hexdigest()[:16]


def encryption_material() -> str:
    cfg = current_app.config
    return str(cfg.get("ENCRYPTION_KEY") or cfg["SECRET_KEY"])


def secret_key_file() -> Path:
    return Path(current_app.config["INSTANCE_PATH"]) / "secret_key"


@dataclass
class BackupResult:
    path: Path
    size: int
    dialect: str
    revision: str
    media_files: int
    webqr_session_files: int
    tables: int
    rows: int
    secret_key_included: bool
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size_bytes": self.size,
            "database": self.dialect,
            "alembic_revision": self.revision,
            "tables": self.tables,
            "rows": self.rows,
            "media_files": self.media_files,
            "webqr_session_files": self.webqr_session_files,
            "secret_key_included": self.secret_key_included,
            "notes": self.notes,
        }


class _ArchiveWriter:
    """Adds members to the tar and remembers each one's size and SHA-256 for the manifest."""

    def __init__(self, tar: tarfile.TarFile, mtime: float):
        self.tar = tar
        self.mtime = mtime
        self.files: dict[str, dict[str, Any]] = {}

    def add(self, name: str, source: IO[bytes], size: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, self.mtime, 0o600
        reader = HashingReader(source)
        self.tar.addfile(info, reader)  # only .read() is used
        self.files[name] = {"size": reader.size, "sha256": reader.sha256.hexdigest()}

    def add_file(self, name: str, path: Path) -> bool:
        """Add a file on disk; False when it vanished first (media swept away meanwhile)."""
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            return False
        with fh:
            self.add(name, fh, os.fstat(fh.fileno()).st_size)
        return True

    def add_bytes(self, name: str, data: bytes) -> None:
        import io

        self.add(name, io.BytesIO(data), len(data))


def _add_media(writer: _ArchiveWriter) -> dict[str, Any]:
    """Local media files go into the archive; S3 media stay in the bucket (versioning or the
    provider's own backups cover them), and the manifest says so."""
    from crm.media.storage import LocalStorage, get_storage

    storage = get_storage()
    if not isinstance(storage, LocalStorage):
        return {"storage": storage.name, "included": False, "files": 0, "bytes": 0}
    files = total = 0
    for key, _mtime in sorted(storage.stored_keys()):
        if writer.add_file(MEDIA_PREFIX + key, storage.root / key):
            files += 1
            total += writer.files[MEDIA_PREFIX + key]["size"]
    return {"storage": "local", "included": True, "files": files, "bytes": total}


def webqr_folder() -> Path:
    return Path(current_app.config["INSTANCE_PATH"]) / "webqr"


def _add_webqr_sessions(writer: _ArchiveWriter, work: Path) -> int:
    """Embedded mode's WhatsApp Web sessions (a SQLite file per number, written by the gateway
    while it runs: copied online like the database), so a restore needs no new QR scan."""
    files = 0
    for path in sorted(webqr_folder().glob("account-*.sqlite3")):
        if not WEBQR_FILE.fullmatch(path.name):
            continue
        copy = work / path.name
        dumps.copy_sqlite(path, copy)
        writer.add_file(WEBQR_PREFIX + path.name, copy)
        copy.unlink()
        files += 1
    return files


def _secret_key() -> str:
    """The instance's generated key, for ``--include-secret-key``. A key given in the environment
    is the deployment's to keep (it is in its .env or secret store), not the instance's."""
    path = secret_key_file()
    key = path.read_text().strip() if path.is_file() else None
    if key is None or key != current_app.config["SECRET_KEY"]:
        raise BackupError(
            _(
                "--include-secret-key stores the key generated in %(path)s, but this instance uses a "
                "SECRET_KEY from its environment: keep that one with your deployment's secrets.",
                path=path,
            )
        )
    return key


def _archive_name(folder: Path, now: datetime) -> Path:
    stem = f"zapdesk-backup-{now:%Y%m%dT%H%M%SZ}"
    path, n = folder / f"{stem}.tar", 1
    while path.exists():  # two backups in one second: keep both
        path, n = folder / f"{stem}-{n}.tar", n + 1
    return path


def _sync_folder(folder: Path) -> None:
    """The rename reaches the disk too, not only the archive's bytes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _notes(media: dict[str, Any], with_key: bool) -> list[str]:
    notes = []
    if not media["included"]:
        notes.append(
            _(
                "Media files are stored in %(storage)s and are not in this backup: back up the bucket "
                "separately (for example with versioning or replication).",
                storage=media["storage"].upper(),
            )
        )
    if with_key:
        notes.append(_("This backup holds the secret key: store it as carefully as the key itself."))
    else:
        notes.append(
            _(
                "The secret key is not in this backup: keep SECRET_KEY (and ENCRYPTION_KEY, if set) "
                "safe separately; without it, the stored Cloud API tokens, app secrets and Gemini keys "
                "cannot be read after a restore."
            )
        )
    return notes


def create_backup(
    output_dir: Path, *, include_secret_key: bool = False, now: datetime | None = None
) -> BackupResult:
    """Write one archive into ``output_dir``: the database (consistent while the app runs), the local
    media files, optionally the secret key, and the manifest last (it lists every other member's
    checksum). Private data: the archive and the folder are readable by the owner only."""
    now = now or datetime.now(UTC)
    dialect = dumps.dialect()
    if dialect not in DATABASE_MEMBER:
        raise BackupError(_("Backups support PostgreSQL and SQLite, not %(dialect)s.", dialect=dialect))
    key = _secret_key() if include_secret_key else None
    try:
        output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=output_dir, prefix=".zapdesk-backup-") as work:
            return _write_archive(Path(work), output_dir, dialect, key, now)
    except OSError as exc:
        raise BackupError(_("The backup could not be written: %(error)s", error=exc)) from None


def _write_archive(
    work: Path, output_dir: Path, dialect: str, key: str | None, now: datetime
) -> BackupResult:
    import json

    member = DATABASE_MEMBER[dialect]
    dump_path = work / member
    dump = dumps.dump_postgresql(dump_path) if dialect == "postgresql" else dumps.dump_sqlite(dump_path)
    partial = work / "archive.part"
    with partial.open("wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        writer = _ArchiveWriter(tar, now.timestamp())
        writer.add_file(member, dump_path)
        dump_path.unlink()  # the archive holds it now: don't keep the space twice
        webqr = _add_webqr_sessions(writer, work) if dialect == "sqlite" else 0
        media = _add_media(writer)
        if key is not None:
            writer.add_bytes(SECRET_KEY_MEMBER, key.encode())
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "app_version": app_version(),
            "database": {"dialect": dialect, "member": member, **dump.details},
            "alembic_revision": dump.revision,
            "row_counts": dump.row_counts,
            "media": media,
            "webqr_session_files": webqr,
            "secret_key_included": key is not None,
            "encryption_key_check": key_check(encryption_material()),
            "files": writer.files,
        }
        writer.add_bytes(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    with partial.open("rb+") as fh:
        os.fsync(fh.fileno())
    final = _archive_name(output_dir, now)
    os.chmod(partial, stat.S_IRUSR | stat.S_IWUSR)
    os.replace(partial, final)
    _sync_folder(output_dir)
    return BackupResult(
        path=final,
        size=final.stat().st_size,
        dialect=dialect,
        revision=dump.revision,
        media_files=media["files"],
        webqr_session_files=webqr,
        tables=len(dump.row_counts),
        rows=sum(dump.row_counts.values()),
        secret_key_included=key is not None,
        notes=_notes(media, key is not None),
    )
