"""The backup archive: one uncompressed tar whose last member, ``manifest.json``, lists every
other member with its size and SHA-256, and describes the backup (format version, time, database
engine, Alembic revision, row counts, media).

Reading checks every member against the manifest in one sequential pass (so a compressed copy,
``.tar.gz``, reads as well) and accepts only the names a backup writes: no entry can land outside
the media folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from flask_babel import gettext as _

from crm.ops.dumps import BackupError

FORMAT = "zapdesk-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SECRET_KEY_MEMBER = "secret_key"  # noqa: S105 (a member name)
MEDIA_PREFIX = "media/"
# Embedded mode: each WhatsApp Web number's session keys are a SQLite file of their own under
# <instance>/webqr/ (in scaled mode they are tables of the PostgreSQL database, so in its dump).
WEBQR_PREFIX = "webqr/"
WEBQR_FILE = re.compile(r"account-\d+\.sqlite3")
DATABASE_MEMBER = {"postgresql": "database.pgdump", "sqlite": "database.sqlite3"}
MAX_MANIFEST_BYTES = 256 * 1024 * 1024


class HashingReader:
    """A file wrapper that hashes and counts what is read through it (tarfile reads in chunks)."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data


@dataclass(frozen=True)
class Archive:
    """A backup archive whose every member matched its manifest when it was read."""

    path: Path
    manifest: dict[str, Any]

    @property
    def dialect(self) -> str:
        return str(self.manifest["database"]["dialect"])

    @property
    def revision(self) -> str:
        return str(self.manifest["alembic_revision"])

    @property
    def row_counts(self) -> dict[str, int]:
        return dict(self.manifest["row_counts"])

    @property
    def media_included(self) -> bool:
        return bool(self.manifest["media"]["included"])

    @property
    def has_secret_key(self) -> bool:
        return SECRET_KEY_MEMBER in self.manifest["files"]


def damaged(path: Path, reason: str) -> BackupError:
    return BackupError(_("%(path)s is not a usable backup: %(reason)s", path=path, reason=reason))


def _check_name(path: Path, name: str) -> None:
    """Only the members a backup writes, and media keys that stay inside the media folder."""
    if name in (MANIFEST, SECRET_KEY_MEMBER, *DATABASE_MEMBER.values()):
        return
    if name.startswith(WEBQR_PREFIX) and WEBQR_FILE.fullmatch(name.removeprefix(WEBQR_PREFIX)):
        return
    key = name.removeprefix(MEDIA_PREFIX)
    parts = key.split("/")
    if (
        key == name
        or "\\" in key
        or any(part in ("", ".", "..") for part in parts)
        or parts[-1].startswith(".part-")
    ):
        raise damaged(path, _("unexpected entry %(name)s", name=name))


def _read_members(path: Path) -> tuple[dict[str, tuple[int, str]], bytes]:
    """One pass over the archive (any compression tar reads): every member's size and SHA-256,
    and the manifest's bytes."""
    seen: dict[str, tuple[int, str]] = {}
    manifest = b""
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            _check_name(path, member.name)
            if not member.isreg() or member.name in seen:
                raise damaged(path, _("unexpected entry %(name)s", name=member.name))
            fh = tar.extractfile(member)
            assert fh is not None  # a regular file
            if member.name == MANIFEST:
                if member.size > MAX_MANIFEST_BYTES:
                    raise damaged(path, _("the manifest is too large"))
                manifest = fh.read()
                continue
            reader = HashingReader(fh)
            while reader.read(1024 * 1024):
                pass
            seen[member.name] = (reader.size, reader.sha256.hexdigest())
    return seen, manifest


def _check_manifest(path: Path, manifest: Any, seen: dict[str, tuple[int, str]]) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise damaged(path, _("it has no Zapdesk manifest"))
    version = manifest.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise BackupError(
            _("%(path)s was made by a newer version of Zapdesk: upgrade Zapdesk to restore it.", path=path)
        )
    try:
        database, files, media = manifest["database"], manifest["files"], manifest["media"]
        valid = (
            version == FORMAT_VERSION
            and DATABASE_MEMBER.get(database["dialect"]) == database["member"]
            and isinstance(manifest["alembic_revision"], str)
            and all(isinstance(v, int) for v in manifest["row_counts"].values())
            and isinstance(media["included"], bool)
            and database["member"] in files
        )
    except (KeyError, TypeError, AttributeError):
        valid = False
    if not valid:
        raise damaged(path, _("its manifest is incomplete"))
    if set(files) != set(seen):
        missing = sorted(set(files) ^ set(seen))
        raise damaged(
            path, _("its members do not match the manifest (%(names)s)", names=", ".join(missing[:3]))
        )
    for name, (size, digest) in seen.items():
        if files[name].get("size") != size or files[name].get("sha256") != digest:
            raise damaged(
                path,
                _("the checksum of %(name)s does not match: the file is damaged or was changed", name=name),
            )


def verify_archive(path: Path) -> Archive:
    """Read the whole archive and check every member against the manifest; change nothing."""
    if not path.is_file():
        raise BackupError(_("No backup file at %(path)s.", path=path))
    try:
        seen, raw_manifest = _read_members(path)
    except (tarfile.TarError, EOFError) as exc:
        truncated = isinstance(exc, EOFError) or "unexpected end" in str(exc)
        raise damaged(path, _("it is truncated") if truncated else _("it is not a tar archive")) from None
    except OSError as exc:
        raise damaged(path, _("it cannot be read (%(error)s)", error=exc.strerror or exc)) from None
    try:
        manifest = json.loads(raw_manifest) if raw_manifest else None
    except ValueError:
        manifest = None
    _check_manifest(path, manifest, seen)
    assert isinstance(manifest, dict)
    return Archive(path, manifest)


def extract_member(archive: Archive, name: str, dest: Path) -> None:
    """Copy one member to ``dest``, checking its checksum again on the way."""
    with tarfile.open(archive.path, "r:*") as tar:
        for member in tar:
            if member.name == name:
                source = tar.extractfile(member)
                assert source is not None
                reader = HashingReader(source)
                with dest.open("wb") as out:
                    shutil.copyfileobj(reader, out, 1024 * 1024)
                check_member(archive, name, reader)
                return
    raise damaged(archive.path, _("%(name)s is missing", name=name))


def check_member(archive: Archive, name: str, reader: HashingReader) -> None:
    """Checked again while restoring: the file could have changed since it was verified."""
    if reader.sha256.hexdigest() != archive.manifest["files"][name]["sha256"]:
        raise damaged(archive.path, _("the checksum of %(name)s does not match", name=name))
