"""Media, common parts: uploads spooled to disk, names and keys, captions, and the claimed job.

Files are written to storage before the database row that names them commits; a row that never
commits leaves an orphan file, which the periodic sweep removes. The other way round (a row
naming a missing file) never happens: rows are only marked ready after their file is stored.

Slow work on a file (storage, ffmpeg, a provider's download) runs on a ``Job``: the row's values
read once when it is claimed, with no database transaction open meanwhile. Its result is written
only if the job still owns the row (same status and claim number), so a job that outlived its
lease, or whose message was deleted meanwhile, changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import secrets
import tempfile
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from flask_babel import gettext as _
from sqlalchemy import or_, select, update
from werkzeug.datastructures import FileStorage

from crm.db import utcnow
from crm.extensions import db
from crm.media import av, images
from crm.media.limits import human_size
from crm.media.models import MediaFile, MediaStatus
from crm.media.sniff import Detected, MediaRejected
from crm.media.storage import get_storage

log = logging.getLogger(__name__)

# A worker that died mid-job gives the file back after this: longer than the slowest job (an
# ffprobe and an ffmpeg run, each up to av.TIMEOUT, plus storage).
LEASE = timedelta(seconds=2 * av.TIMEOUT + 300)
MAX_ATTEMPTS = 5
CAPTION_MAX = 1024  # WhatsApp's caption limit
KEY_PATTERN = re.compile(r"^w\d+/\d{4}/\d{2}/[0-9a-f]{24}(-original|-thumb)?\.[a-z0-9]{1,8}$")


class MediaTooLarge(MediaRejected):
    status = 413
    code = "media_too_large"


@dataclass(frozen=True)
class Spooled:
    """An upload copied to a local temporary file, with what we learnt while copying."""

    path: Path
    size: int
    sha256: str
    filename: str


@contextmanager
def spooled(upload: FileStorage, max_bytes: int) -> Iterator[Spooled]:
    """Copy an upload to a temporary file (hashing it), refusing it past ``max_bytes``."""
    with tempfile.TemporaryDirectory(prefix="zapdesk-upload-") as folder:
        path = Path(folder) / "upload"
        digest = hashlib.sha256()
        size = 0
        with path.open("wb") as out:
            while chunk := upload.stream.read(1024 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise MediaTooLarge(
                        _(
                            "The file is larger than %(size)s, the most this number can send.",
                            size=human_size(max_bytes),
                        )
                    )
                digest.update(chunk)
                out.write(chunk)
        yield Spooled(path, size, digest.hexdigest(), clean_filename(upload.filename or ""))


def clean_filename(name: str) -> str:
    """A file name fit to show and to put in a Content-Disposition header: no path, no control
    characters, at most 120 characters."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip(" .")
    return name[:120] or "file"


def named(filename: str, found: Detected) -> str:
    """The file's name with an extension that says what it really is."""
    _stem, dot, ext = filename.rpartition(".")
    if dot and ext.lower() == found.ext:
        return filename
    return f"{filename}.{found.ext}"[-120:]


def new_key(workspace_id: int, ext: str, suffix: str = "") -> str:
    """A fresh storage key; nothing in it comes from the user (see KEY_PATTERN)."""
    now = utcnow()
    ext = re.sub(r"[^a-z0-9]", "", ext.lower())[:8] or "bin"
    return f"w{workspace_id}/{now:%Y/%m}/{secrets.token_hex(12)}{suffix}.{ext}"


def check_caption(text: object) -> str:
    from crm.textcheck import check_clean_text

    if text is None:
        return ""
    if not isinstance(text, str):
        raise MediaRejected(_("The caption must be text."), code="invalid_text")
    text = text.strip()
    if len(text) > CAPTION_MAX:
        raise MediaRejected(
            _("A caption can have at most %(n)d characters.", n=CAPTION_MAX), code="invalid_text"
        )
    return check_clean_text(text, code="invalid_text") if text else ""


def kind_label(kind: str) -> str:
    return {
        "image": _("Image"),
        "video": _("Video"),
        "audio": _("Audio"),
        "document": _("Document"),
        "sticker": _("Sticker"),
    }.get(kind, kind)


# --- jobs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A claimed media row's values."""

    id: int
    workspace_id: int
    account_id: int | None
    provider: str  # of its number ("cloud" when the number is gone)
    direction: str
    kind: str
    mime_type: str
    filename: str | None
    original_key: str | None
    provider_media_id: str | None
    source_encrypted: str | None
    created_at: datetime
    attempts: int  # this claim's number


def claim(media_id: int, statuses: tuple[str, ...]) -> Job | None:
    """``statuses`` → working, atomically (also a job whose worker died: its lease ran out);
    None when someone else has it or it is done. Returns with no transaction open."""
    now = utcnow()
    claimed = db.session.execute(
        update(MediaFile)
        .where(
            MediaFile.id == media_id,
            or_(
                MediaFile.status.in_(statuses),
                (MediaFile.status == MediaStatus.WORKING.value) & (MediaFile.updated_at < now - LEASE),
            ),
        )
        .values(status=MediaStatus.WORKING.value, updated_at=now, attempts=MediaFile.attempts + 1)
    ).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    if not claimed:
        return None
    media = db.session.get(MediaFile, media_id)
    if media is None:
        db.session.commit()
        return None
    job = Job(
        id=media.id,
        workspace_id=media.workspace_id,
        account_id=media.account_id,
        provider=provider_of(media.account_id),
        direction=media.direction,
        kind=media.kind,
        mime_type=media.mime_type,
        filename=media.filename,
        original_key=media.original_key,
        provider_media_id=media.provider_media_id,
        source_encrypted=media.source_encrypted,
        created_at=media.created_at,
        attempts=media.attempts,
    )
    db.session.commit()  # nothing stays open while the file is worked on
    return job


def provider_of(account_id: int | None) -> str:
    """The provider of a file's number (\"cloud\" when the number is gone)."""
    from crm.whatsapp.models import WhatsAppAccount

    account = db.session.get(WhatsAppAccount, account_id) if account_id else None
    return account.provider if account else "cloud"


def finish(job: Job, **values: Any) -> bool:
    """Write the job's result if it still owns the row; False when it no longer does."""
    owned = db.session.execute(
        update(MediaFile)
        .where(
            MediaFile.id == job.id,
            MediaFile.status == MediaStatus.WORKING.value,
            MediaFile.attempts == job.attempts,
        )
        .values(updated_at=utcnow(), **values)
    ).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    if not owned:
        log.warning("media %s: the job lost its claim (lease ran out or deleted); result dropped", job.id)
    return bool(owned)


def give_up(job: Job, code: str, title: str) -> str:
    """The file can't be made ready: its row says why; an upload's messages fail with it."""
    if finish(job, status=MediaStatus.FAILED.value, error_code=code[:32], error_title=title):
        if job.direction == "out":
            from crm.media.outbound import fail_waiting

            fail_waiting(job, code, title)
        else:
            announce(job.workspace_id, job.id)
    return "failed"


def retry_later(job: Job, detail: str) -> str:
    """A passing failure (storage down, a provider hiccup): pending again, for the reconciler."""
    if job.attempts >= MAX_ATTEMPTS:
        return give_up(job, "media_error", _("The file could not be processed: %(detail)s", detail=detail))
    finish(job, status=MediaStatus.PENDING.value, error_title=detail[:2000])
    return "retry"


def store_file(workspace_id: int, source: Path, mime: str, ext: str) -> dict[str, Any]:
    """Keep a file under a new key; the row's values that describe it."""
    key = new_key(workspace_id, ext)
    with source.open("rb") as fh:
        get_storage().save(key, fh, mime)
    digest = hashlib.sha256()
    with source.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return {
        "storage_key": key,
        "mime_type": mime,
        "size": source.stat().st_size,
        "sha256": digest.hexdigest(),
    }


def store_thumbnail(workspace_id: int, source: Path) -> str | None:
    """A thumbnail's key, or None when none can be made (the inbox shows a link instead)."""
    try:
        thumb = images.thumbnail(source)
    except Exception:  # optional: a file that can't be thumbnailed is still a file
        return None
    key = new_key(workspace_id, thumb.ext, "-thumb")
    get_storage().save(key, io.BytesIO(thumb.data), thumb.mime)
    return key


def delete_keys(*keys: str | None) -> None:
    storage = get_storage()
    for key in keys:
        if key:
            storage.delete(key)


def announce(workspace_id: int, media_id: int) -> None:
    """Every open thread showing a message with this file re-renders it."""
    from crm.inbox.models import Message
    from crm.realtime.broker import publish

    rows = db.session.execute(
        select(Message.id, Message.conversation_id).where(
            Message.media_file_id == media_id, Message.workspace_id == workspace_id
        )
    ).all()
    db.session.commit()
    for message_id, conversation_id in rows:
        publish(
            workspace_id,
            {"type": "message.status", "message_id": message_id, "conversation_id": conversation_id,
             "status": "media"},
        )  # fmt: skip


@contextmanager
def open_stored(storage_key: str) -> Iterator[IO[bytes]]:
    """A stored file, opened for reading from a local copy (streamed to a provider's upload)."""
    with tempfile.TemporaryDirectory(prefix="zapdesk-send-") as folder:
        path = Path(folder) / "file"
        get_storage().fetch(storage_key, path)
        with path.open("rb") as stream:
            yield stream


def read_bytes(storage_key: str) -> bytes:
    """A stored file's bytes (for a provider whose upload needs them whole)."""
    with open_stored(storage_key) as stream:
        return stream.read()
