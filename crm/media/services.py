"""Media: accepting an agent's upload, preparing it for WhatsApp, downloading what customers send.

Files are written to storage before the database row that names them commits; a row that never
commits leaves an orphan file, which the periodic sweep removes. The other way round (a row
naming a missing file) never happens: rows are only marked ready after their file is stored.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from flask_babel import gettext as _
from sqlalchemy import or_, select, update
from werkzeug.datastructures import FileStorage

from crm.db import utcnow
from crm.extensions import db
from crm.media import av, images
from crm.media.limits import human_size, limit_for, upload_max
from crm.media.models import MediaFile, MediaStatus
from crm.media.sniff import Detected, MediaRejected, sniff
from crm.media.storage import get_storage
from crm.tenancy import get_scoped

if TYPE_CHECKING:
    from crm.inbox.models import Message

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=10)  # a worker that died mid-job gives the file back after this
MAX_ATTEMPTS = 5
CAPTION_MAX = 1024  # WhatsApp's caption limit
# Cloud API media ids can be downloaded for 7 days (Meta keeps the file no longer).
DOWNLOAD_WINDOW = timedelta(days=7)


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


def _named(filename: str, found: Detected) -> str:
    """The file's name with an extension that says what it really is."""
    _stem, dot, ext = filename.rpartition(".")
    if dot and ext.lower() == found.ext:
        return filename
    return f"{filename}.{found.ext}"[-120:]


def new_key(workspace_id: int, ext: str, suffix: str = "") -> str:
    now = utcnow()
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


# --- outbound: an agent's upload ---------------------------------------------------------------


def accept_upload(workspace_id: int, account_id: int, provider: str, upload: Spooled) -> MediaFile:
    """Check what an agent attached and store it as it came (no commit): the real type from its
    content, the size against the number's limit for that type, images against decompression
    bombs and truncation. Compressing and converting happen later, in a task."""
    found = sniff(upload.path)
    ffmpeg = av.available()
    if found.kind in ("audio", "video") and found.convert and not ffmpeg:
        raise MediaRejected(
            _(
                "%(type)s can't be sent as it is, and this server has no ffmpeg to convert it. Send MP4 "
                "video or MP3, M4A, AAC, AMR or OGG/Opus audio, or ask an admin to install ffmpeg.",
                type=found.mime.split(";")[0],
            ),
            code="needs_ffmpeg",
        )
    if ffmpeg and found.kind == "video":
        found = _video_or_voice(upload.path, found)
    largest = upload_max(provider, found.kind, convertible=ffmpeg)
    if upload.size > largest:
        raise MediaTooLarge(
            _(
                "%(kind)s files can be at most %(size)s on this number; this one is %(actual)s.",
                kind=kind_label(found.kind),
                size=human_size(largest),
                actual=human_size(upload.size),
            )
        )
    width = height = None
    if found.kind == "image":
        width, height = images.check_image(upload.path)
    key = new_key(workspace_id, found.ext, "-original")
    with upload.path.open("rb") as source:
        get_storage().save(key, source, found.mime)
    media = MediaFile(
        workspace_id=workspace_id,
        account_id=account_id,
        direction="out",
        kind=found.kind,
        status=MediaStatus.PENDING.value,
        mime_type=found.mime,
        size=upload.size,
        sha256=upload.sha256,
        filename=_named(upload.filename, found),
        original_key=key,
        width=width,
        height=height,
    )
    db.session.add(media)
    db.session.flush()
    return media


def _video_or_voice(path: Path, found: Detected) -> Detected:
    """A WebM/MP4 with no picture is a sound recording (browsers record voice as WebM): it goes as
    audio. A file ffprobe can't read is refused now, not after it was queued."""
    probed = av.probe(path)
    if probed.video_codec is not None:
        return found
    if probed.audio_codec is None:
        raise MediaRejected(_("The file has neither picture nor sound."))
    return replace(found, kind="audio", convert=True)


def kind_label(kind: str) -> str:
    return {
        "image": _("Image"),
        "video": _("Video"),
        "audio": _("Audio"),
        "document": _("Document"),
        "sticker": _("Sticker"),
    }.get(kind, kind)


def _claim(media_id: int, statuses: tuple[str, ...]) -> MediaFile | None:
    """pending (or failed, for a retry) → working, atomically; also takes back a job whose
    worker died (its lease ran out). None when someone else has it or it is done."""
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
    return db.session.get(MediaFile, media_id) if claimed else None


def _store(media: MediaFile, source: Path, mime: str, ext: str) -> None:
    key = new_key(media.workspace_id, ext)
    with source.open("rb") as fh:
        get_storage().save(key, fh, mime)
    media.storage_key = key
    media.mime_type = mime
    media.size = source.stat().st_size
    media.sha256 = _sha256_of(source)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _store_thumbnail(media: MediaFile, source: Path) -> None:
    try:
        thumb = images.thumbnail(source)
    except MediaRejected:
        return  # the inbox shows a link instead
    key = new_key(media.workspace_id, thumb.ext, "-thumb")
    import io

    get_storage().save(key, io.BytesIO(thumb.data), thumb.mime)
    media.thumbnail_key = key


def _provider_of(media: MediaFile) -> str:
    from crm.whatsapp.models import WhatsAppAccount

    account = db.session.get(WhatsAppAccount, media.account_id) if media.account_id else None
    return account.provider if account else "cloud"


def prepare_outbound(media_id: int) -> str:
    """Make an upload sendable: images compressed to fit, audio to a voice note and video to MP4
    (with ffmpeg), then release the messages that wait for it. A file that can't be made sendable
    fails, with its reason, and so do those messages."""
    media = _claim(media_id, (MediaStatus.PENDING.value,))
    if media is None:
        return "not_claimed"
    provider = _provider_of(media)
    try:
        with tempfile.TemporaryDirectory(prefix="zapdesk-media-") as folder:
            original = Path(folder) / "original"
            assert media.original_key is not None
            get_storage().fetch(media.original_key, original)
            _prepare_file(media, original, Path(folder), provider)
    except MediaRejected as exc:
        return _give_up(media, "media_invalid", exc.message)
    except Exception as exc:  # storage down, ffmpeg killed...: try again later, a few times
        log.exception("media %s: preparing failed", media.id)
        return _retry_later(media, f"{exc.__class__.__name__}: {exc}"[:300])
    old_key = media.original_key
    media.original_key = None
    media.status = MediaStatus.READY.value
    media.updated_at = utcnow()
    media.error_code = media.error_title = None
    db.session.commit()
    if old_key and old_key != media.storage_key:
        get_storage().delete(old_key)
    _release_waiting(media)
    return "ready"


def _prepare_file(media: MediaFile, original: Path, folder: Path, provider: str) -> None:
    limit = limit_for(provider, media.kind).max_bytes
    if media.kind == "image":
        encoded = images.compress(original, limit)
        final = folder / f"final.{encoded.ext}"
        final.write_bytes(encoded.data)
        _store(media, final, encoded.mime, encoded.ext)
        media.width, media.height = encoded.width, encoded.height
        _store_thumbnail(media, final)
        return
    if media.kind == "audio" and av.available():
        if media.mime_type != "audio/ogg":
            final = folder / "voice.ogg"
            av.to_voice_note(original, final)
        else:
            final = original
        media.voice = True
        _check_size(final, limit, media.kind)
        _store(media, final, "audio/ogg", "ogg")
        return
    if media.kind == "video" and av.available():
        found = av.probe(original)
        if found.video_codec is None:
            raise MediaRejected(_("The video has no picture."))
        final = original
        if not av.is_whatsapp_mp4(found) or original.stat().st_size > limit:
            final = folder / "video.mp4"
            av.to_mp4(original, final, limit, found.duration)
        _check_size(final, limit, media.kind)
        _store(
            media,
            final,
            "video/mp4" if final != original else media.mime_type,
            "mp4" if final != original else _ext(media),
        )
        return
    _check_size(original, limit, media.kind)
    _store(media, original, media.mime_type, _ext(media))


def _ext(media: MediaFile) -> str:
    name = media.filename or ""
    return name.rpartition(".")[2].lower()[:8] if "." in name else "bin"


def _check_size(path: Path, limit: int, kind: str) -> None:
    size = path.stat().st_size
    if size > limit:
        raise MediaTooLarge(
            _(
                "%(kind)s files can be at most %(size)s on this number; this one is %(actual)s.",
                kind=kind_label(kind),
                size=human_size(limit),
                actual=human_size(size),
            )
        )


def _give_up(media: MediaFile, code: str, title: str) -> str:
    media.status = MediaStatus.FAILED.value
    media.error_code = code
    media.error_title = title
    media.updated_at = utcnow()
    db.session.commit()
    if media.direction == "out":
        _fail_waiting(media)
    else:
        _announce(media)
    return "failed"


def _retry_later(media: MediaFile, detail: str) -> str:
    if media.attempts >= MAX_ATTEMPTS:
        return _give_up(media, "media_error", _("The file could not be processed: %(detail)s", detail=detail))
    media.status = MediaStatus.PENDING.value
    media.error_title = detail
    media.updated_at = utcnow()
    db.session.commit()
    return "retry"


def _waiting_messages(media: MediaFile) -> list[tuple[int, int | None]]:
    from crm.inbox.models import Message
    from crm.whatsapp.models import Outbox, OutboxState

    return list(
        db.session.execute(
            select(Message.id, Outbox.id)
            .outerjoin(Outbox, (Outbox.message_id == Message.id) & (Outbox.state == OutboxState.QUEUED.value))
            .where(Message.media_file_id == media.id, Message.workspace_id == media.workspace_id)
        ).tuples()
    )


def _release_waiting(media: MediaFile) -> None:
    """The file is ready: send the messages that carry it, and show it in the thread."""
    from crm.whatsapp.tasks import deliver_task

    waiting = _waiting_messages(media)
    _announce(media)
    for _message_id, outbox_id in waiting:
        if outbox_id is not None:
            deliver_task(outbox_id)


def _fail_waiting(media: MediaFile) -> None:
    from crm.inbox.models import Message
    from crm.realtime.broker import publish_after_commit
    from crm.whatsapp.models import Outbox, OutboxState

    for message_id, outbox_id in _waiting_messages(media):
        message = db.session.get(Message, message_id)
        if message is None or message.status not in ("queued", "sending"):
            continue
        if outbox_id is not None:
            db.session.execute(
                update(Outbox)
                .where(Outbox.id == outbox_id, Outbox.state == OutboxState.QUEUED.value)
                .values(state=OutboxState.FAILED.value, last_error=(media.error_title or "")[:2000])
            )
        message.status = "failed"
        message.error_code = (media.error_code or "media_invalid")[:32]
        message.error_title = media.error_title
        publish_after_commit(
            media.workspace_id,
            {
                "type": "message.status",
                "message_id": message.id,
                "conversation_id": message.conversation_id,
                "status": "failed",
            },
        )
    db.session.commit()


def _announce(media: MediaFile) -> None:
    """Every open thread showing a message with this file re-renders it."""
    from crm.inbox.models import Message
    from crm.realtime.broker import publish

    rows = db.session.execute(
        select(Message.id, Message.conversation_id).where(
            Message.media_file_id == media.id, Message.workspace_id == media.workspace_id
        )
    ).all()
    for message_id, conversation_id in rows:
        publish(
            media.workspace_id,
            {
                "type": "message.status",
                "message_id": message_id,
                "conversation_id": conversation_id,
                "status": "media",
            },
        )


def read_bytes(media: MediaFile) -> bytes:
    """The prepared file's bytes (for a provider's upload)."""
    assert media.storage_key is not None
    with tempfile.TemporaryDirectory(prefix="zapdesk-send-") as folder:
        path = Path(folder) / "file"
        get_storage().fetch(media.storage_key, path)
        return path.read_bytes()


# --- inbound: what customers send ---------------------------------------------------------------


def register_inbound(
    workspace_id: int, account_id: int, message_id: int, kind: str, ref: object, *, encrypt: bool
) -> int:
    """A media row for an inbound message, pending download (no commit)."""
    from crm.crypto import encrypt_json
    from crm.inbox.models import Message
    from crm.whatsapp.events import MediaRef

    assert isinstance(ref, MediaRef)
    media = MediaFile(
        workspace_id=workspace_id,
        account_id=account_id,
        direction="in",
        kind=kind if kind in ("image", "audio", "video", "document", "sticker") else "document",
        status=MediaStatus.PENDING.value,
        mime_type=(ref.mime_type or "application/octet-stream")[:128],
        filename=clean_filename(ref.filename) if ref.filename else None,
        provider_media_id=(ref.provider_media_id or "")[:128] or None,
        source_encrypted=encrypt_json({"wire": ref.wire}) if ref.wire and encrypt else None,
        voice=ref.voice,
    )
    db.session.add(media)
    db.session.flush()
    db.session.execute(update(Message).where(Message.id == message_id).values(media_file_id=media.id))
    return media.id


Fetch = Callable[[MediaFile, Path, int], str]  # writes the file to the path, returns its MIME type


def download_inbound(media_id: int, fetch: Fetch, *, retrying: bool = False) -> str:
    """Download a customer's file with ``fetch`` (the provider's way), store it and show it."""
    statuses = (
        (MediaStatus.PENDING.value, MediaStatus.FAILED.value) if retrying else (MediaStatus.PENDING.value,)
    )
    media = _claim(media_id, statuses)
    if media is None:
        return "not_claimed"
    if media.provider_media_id and utcnow() - media.created_at > DOWNLOAD_WINDOW:
        return _give_up(media, "media_expired", _("WhatsApp keeps files for 7 days; this one is older."))
    limit = 100 * 1024 * 1024
    try:
        with tempfile.TemporaryDirectory(prefix="zapdesk-download-") as folder:
            path = Path(folder) / "download"
            claimed_mime = fetch(media, path, limit)
            _store_inbound_file(media, path, claimed_mime)
    except MediaRejected as exc:
        return _give_up(media, exc.code[:32], exc.message)
    except Exception as exc:
        from crm.whatsapp.providers.base import ErrorAction, ProviderError

        if isinstance(exc, ProviderError) and exc.action is ErrorAction.FAIL:
            return _give_up(media, exc.code[:32], exc.title)
        log.warning("media %s: download failed: %s", media.id, exc.__class__.__name__)
        return _retry_later(media, f"{getattr(exc, 'title', None) or exc.__class__.__name__}"[:300])
    media.status = MediaStatus.READY.value
    media.updated_at = utcnow()
    media.error_code = media.error_title = None
    media.source_encrypted = None  # the file is ours now; its keys are not needed any more
    db.session.commit()
    _announce(media)
    return "ready"


def _store_inbound_file(media: MediaFile, path: Path, claimed_mime: str) -> None:
    """Keep what the customer sent as it is. Its type is read from its content: a file whose
    content is not what the provider claims is kept as a download, never shown inline."""
    try:
        found: Detected | None = sniff(path)
    except MediaRejected:
        found = None
    claimed = (claimed_mime or media.mime_type or "").split(";")[0].strip().lower()
    if (found is not None and found.mime.split(";")[0] == claimed) or (
        found is not None and found.kind == media.kind
    ):
        mime, ext = found.mime, found.ext
    else:
        mime, ext = "application/octet-stream", "bin"
    _store(media, path, mime, ext)
    if media.kind in ("image", "sticker") and mime.startswith("image/"):
        _store_thumbnail(media, path)


def request_retry(workspace_id: int, media_id: int) -> MediaFile:
    """An agent asks to download a failed file again."""
    media = get_scoped(MediaFile, workspace_id, media_id)
    if media.direction != "in" or media.status != MediaStatus.FAILED.value:
        from crm.errors import Conflict

        raise Conflict(_("Only a failed download can be retried."), code="invalid_state")
    media.status = MediaStatus.PENDING.value
    media.attempts = 0
    media.error_code = media.error_title = None
    media.updated_at = utcnow()
    enqueue_download_after_commit(media)
    db.session.commit()
    _announce(media)
    return media


def message_of(media: MediaFile) -> Message:
    """The (first) message that carries this file."""
    from crm.errors import NotFound
    from crm.inbox.models import Message

    message = db.session.scalar(
        select(Message)
        .where(Message.media_file_id == media.id, Message.workspace_id == media.workspace_id)
        .order_by(Message.id)
        .limit(1)
    )
    if message is None:
        raise NotFound(f"message of media {media.id}")
    return message


def enqueue_download_after_commit(media: MediaFile) -> None:
    """Cloud API and sandbox files are downloaded by a worker; WebQR files by the gateway that
    owns the number's session (it polls for pending downloads)."""
    if _provider_of(media) == "webqr":
        return
    from crm.media.tasks import download_media_task
    from crm.worker import enqueue_after_commit

    enqueue_after_commit(download_media_task, media.id)


def fetch_for(media: MediaFile) -> Fetch:
    """How a worker downloads this file: the Cloud API's media endpoint (sandbox files are stored
    at once by the simulator and never fetched)."""
    from crm.whatsapp.models import WhatsAppAccount

    account = db.session.get(WhatsAppAccount, media.account_id) if media.account_id else None
    if account is None or account.provider != "cloud":
        raise MediaRejected(_("This file can't be downloaded from its number."), code="media_unavailable")
    from crm.whatsapp.providers.cloud import CloudClient

    client = CloudClient(account)

    def fetch(row: MediaFile, path: Path, limit: int) -> str:
        if not row.provider_media_id:
            raise MediaRejected(_("WhatsApp gave no id for this file."), code="media_unavailable")
        with path.open("wb") as out:
            return client.download_media_to(row.provider_media_id, out, limit)

    return fetch


def store_simulated(workspace_id: int, message_id: int, upload: Spooled) -> None:
    """The sandbox's customer phone sends a file: kept at once as if downloaded."""
    from crm.inbox.models import Message

    message = db.session.get(Message, message_id)
    assert message is not None and message.media_file_id is not None
    media = db.session.get(MediaFile, message.media_file_id)
    assert media is not None
    _store_inbound_file(media, upload.path, media.mime_type)
    media.status = MediaStatus.READY.value
    media.updated_at = utcnow()
    db.session.commit()
    _announce(media)


# --- removal ---------------------------------------------------------------------------------


def delete_files(media: MediaFile) -> None:
    storage = get_storage()
    for key in (media.storage_key, media.original_key, media.thumbnail_key):
        if key:
            storage.delete(key)


def delete_unreferenced(media_ids: list[int]) -> int:
    """Delete the rows and files of these media that no message carries any more (after the
    messages, or the lead and its conversations, were deleted)."""
    from crm.inbox.models import Message

    removed = 0
    for media_id in media_ids:
        media = db.session.get(MediaFile, media_id)
        if media is None:
            continue
        in_use = db.session.scalar(select(Message.id).where(Message.media_file_id == media_id).limit(1))
        if in_use is not None:
            continue
        keys = [k for k in (media.storage_key, media.original_key, media.thumbnail_key) if k]
        db.session.delete(media)
        db.session.commit()
        storage = get_storage()
        for key in keys:
            storage.delete(key)
        removed += 1
    return removed


def sweep_orphans(grace: timedelta = timedelta(hours=6)) -> dict[str, int]:
    """Remove what nothing points at any more: media rows no message carries (older than
    ``grace``, so an upload being sent is never taken), and stored files no row names."""
    from crm.inbox.models import Message

    cutoff = utcnow() - grace
    unused = list(
        db.session.scalars(
            select(MediaFile.id)
            .where(
                MediaFile.created_at < cutoff,
                ~select(Message.id).where(Message.media_file_id == MediaFile.id).exists(),
            )
            .limit(10_000)
        )
    )
    rows = delete_unreferenced(unused)
    known: set[str] = set()
    for keys in db.session.execute(
        select(MediaFile.storage_key, MediaFile.original_key, MediaFile.thumbnail_key)
    ).yield_per(5000):
        known.update(k for k in keys if k)
    storage = get_storage()
    files = 0
    for key, modified in list(storage.stored_keys()):
        if key not in known and modified < cutoff:
            storage.delete(key)
            files += 1
    db.session.commit()
    return {"rows": rows, "files": files}


def reconcile_media() -> dict[str, int]:
    """Jobs the queue lost (Redis flushed, worker killed): pending files older than a minute, and
    files whose worker's lease ran out, are handed to the queue again. WebQR downloads are the
    gateway's (it polls for them)."""
    from crm.media.tasks import download_media_task, prepare_media_task
    from crm.whatsapp.models import WhatsAppAccount

    now = utcnow()
    rows = db.session.execute(
        select(MediaFile.id, MediaFile.direction, WhatsAppAccount.provider)
        .outerjoin(WhatsAppAccount, WhatsAppAccount.id == MediaFile.account_id)
        .where(
            or_(
                (MediaFile.status == MediaStatus.PENDING.value)
                & (MediaFile.updated_at < now - timedelta(minutes=1)),
                (MediaFile.status == MediaStatus.WORKING.value) & (MediaFile.updated_at < now - LEASE),
            )
        )
        .limit(1000)
    ).all()
    db.session.commit()
    counts = {"prepare": 0, "download": 0}
    for media_id, direction, provider in rows:
        if direction == "out":
            prepare_media_task(media_id)
            counts["prepare"] += 1
        elif provider == "cloud":
            download_media_task(media_id)
            counts["download"] += 1
    return counts


def pending_downloads(account_id: int, limit: int = 20) -> list[int]:
    """Files of this number waiting to be downloaded (or whose downloader died), oldest first."""
    now = utcnow()
    return list(
        db.session.scalars(
            select(MediaFile.id)
            .where(
                MediaFile.account_id == account_id,
                MediaFile.direction == "in",
                or_(
                    MediaFile.status == MediaStatus.PENDING.value,
                    (MediaFile.status == MediaStatus.WORKING.value) & (MediaFile.updated_at < now - LEASE),
                ),
            )
            .order_by(MediaFile.id)
            .limit(limit)
        )
    )
