"""The archive file: gzip-compressed JSON Lines, written and read in one streaming pass.

One JSON object per line, ``{"type": ..., ...}``:

- ``header``: ``format``, ``version``, ``workspace_id``, ``archive_id``, ``cutoff``, ``created_at``;
- per conversation, in ascending conversation id: ``conversation`` (``row``: every column of
  ``conversations``), then its ``note`` lines, then its ``message`` lines, oldest first (``row``:
  every column of ``conversation_notes`` / ``messages``);
- ``end``: the counts of conversations, notes and messages (a truncated file has no such line).

Columns are written by name, times in ISO 8601 UTC, so a file stays readable by a later schema:
columns it lacks take their defaults, columns the database no longer has are ignored.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import Table

from crm.db import UTCDateTime
from crm.errors import DomainError

FORMAT = "zapdesk-message-archive"
VERSION = 1
CHUNK = 1024 * 1024
KINDS = ("conversation", "note", "message")


class ArchiveMissing(DomainError):
    status = 409
    code = "archive_missing"


class ArchiveCorrupt(DomainError):
    status = 409
    code = "archive_corrupt"


def _encode(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def encode_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {name: _encode(value) for name, value in row.items()}


def damaged(key: str, reason: str) -> ArchiveCorrupt:
    return ArchiveCorrupt(_("The archive file %(key)s is damaged: %(reason)s.", key=key, reason=reason))


def decode_row(table: Table, raw: Any, key: str) -> dict[str, Any]:
    """A row of ``table`` from the file ``key``: known columns only, times parsed; ArchiveCorrupt
    when it is not an object with an integer id."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), int):
        raise damaged(key, _("a row has no id"))
    row: dict[str, Any] = {}
    for column in table.columns:
        if column.name not in raw:
            continue
        value = raw[column.name]
        if value is not None and isinstance(column.type, UTCDateTime):
            try:
                value = datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise damaged(key, _("a row has an unreadable time")) from None
        row[column.name] = value
    return row


@dataclass
class Counts:
    conversations: int = 0
    notes: int = 0
    messages: int = 0

    def add(self, kind: str) -> None:
        setattr(self, kind + "s", getattr(self, kind + "s") + 1)

    def as_dict(self) -> dict[str, int]:
        return {"conversations": self.conversations, "notes": self.notes, "messages": self.messages}


class ArchiveWriter:
    """Writes the lines to a local gzip file; ``close`` adds the end line and returns the counts."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path = path
        self.counts = Counts()
        self._gz = gzip.GzipFile(path, "wb", compresslevel=6, mtime=0)
        self._line({"type": "header", "format": FORMAT, "version": VERSION, **encode_row(header)})

    def _line(self, obj: dict[str, Any]) -> None:
        self._gz.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")

    def write(self, kind: str, row: Mapping[Any, Any]) -> None:
        self.counts.add(kind)
        self._line({"type": kind, "row": encode_row(row)})

    def close(self) -> Counts:
        self._line({"type": "end", **self.counts.as_dict()})
        self._gz.close()
        return self.counts

    def abort(self) -> None:
        self._gz.close()


def file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclass(frozen=True)
class Entry:
    kind: str  # conversation | note | message
    row: dict[str, Any]  # as written (times as text): decode_row() gives database values


def read_entries(path: Path, key: str, workspace_id: int, archive_id: int) -> Iterator[Entry]:
    """Every conversation, note and message line of the file, in order. ArchiveCorrupt when it
    is not gzip, not JSON Lines, another archive's file, out of order, or truncated (no end line
    or counts that differ): a caller that must not act on a damaged file reads it whole first."""
    counts = Counts()
    ended = False
    try:
        with gzip.open(path, "rb") as gz:
            for number, line in enumerate(gz, start=1):
                obj = json.loads(line)
                if not isinstance(obj, dict) or ended:
                    raise damaged(key, _("line %(n)d is unexpected", n=number))
                kind = obj.get("type")
                if number == 1:
                    _check_header(obj, key, workspace_id, archive_id)
                elif kind in KINDS and isinstance(obj.get("row"), dict):
                    if kind != "conversation" and counts.conversations == 0:
                        raise damaged(key, _("line %(n)d is unexpected", n=number))
                    counts.add(kind)
                    yield Entry(kind, obj["row"])
                elif kind == "end":
                    if {k: obj.get(k) for k in counts.as_dict()} != counts.as_dict():
                        raise damaged(key, _("its line counts do not match"))
                    ended = True
                else:
                    raise damaged(key, _("line %(n)d is unexpected", n=number))
    except (OSError, EOFError, zlib.error, ValueError) as exc:  # bad gzip, bad JSON, bad UTF-8
        raise damaged(key, _("it cannot be read (%(error)s)", error=type(exc).__name__)) from None
    if not ended:
        raise damaged(key, _("it is truncated"))


def _check_header(obj: dict[str, Any], key: str, workspace_id: int, archive_id: int) -> None:
    if obj.get("type") != "header" or obj.get("format") != FORMAT:
        raise damaged(key, _("it is not a Zapdesk message archive"))
    if not isinstance(obj.get("version"), int) or obj["version"] > VERSION:
        raise damaged(key, _("it was written by a newer version of Zapdesk"))
    if obj.get("workspace_id") != workspace_id or obj.get("archive_id") != archive_id:
        raise damaged(key, _("it belongs to another archive"))


def fetch_verified(storage_key: str, sha256: str | None, dest: Path) -> Path:
    """The stored file, copied to ``dest`` through the media storage and checked against the
    SHA-256 recorded when it was written. ArchiveMissing / ArchiveCorrupt otherwise."""
    from crm.media.storage import get_storage

    storage = get_storage()
    try:
        present = storage.exists(storage_key)
        if present:
            storage.fetch(storage_key, dest)
    except Exception as exc:  # a storage that can't be reached (S3 down, permissions...)
        raise ArchiveMissing(
            _(
                "The archive file %(key)s could not be read: %(error)s",
                key=storage_key,
                error=type(exc).__name__,
            )
        ) from None
    if not present:
        raise ArchiveMissing(_("The archive file %(key)s is missing from the storage.", key=storage_key))
    digest, _size = file_sha256(dest)
    if sha256 is None or digest != sha256:
        raise damaged(storage_key, _("its checksum does not match"))
    return dest
