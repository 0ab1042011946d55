"""An agent's file: checked when attached, prepared for WhatsApp in a task, then sent.

The upload's checks run in the request and answer at once (real type, size for that kind on this
number, decompression bombs, damaged photos). Compressing and converting run in a task; the
message waits for its file (parked in the outbox) and is released, or failed with the reason,
when the file is ready or can't be.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import select, update

from crm.extensions import db
from crm.media import av, images
from crm.media.limits import human_size, limit_for, upload_max
from crm.media.models import MediaFile, MediaStatus
from crm.media.services import (
    Job,
    MediaTooLarge,
    Spooled,
    announce,
    claim,
    delete_keys,
    finish,
    give_up,
    kind_label,
    named,
    new_key,
    retry_later,
    store_file,
    store_thumbnail,
)
from crm.media.sniff import Detected, MediaRejected, sniff
from crm.media.storage import get_storage

log = logging.getLogger(__name__)


def accept_upload(workspace_id: int, account_id: int, provider: str, upload: Spooled) -> MediaFile:
    """Check what an agent attached and store it as it came (no commit): the real type from its
    content, the size against the number's limit for that type, photos against decompression
    bombs and truncation. Reads nothing from the database before the row is added, so the caller
    can hold no transaction while this works on the file."""
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
        filename=named(upload.filename, found),
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


def prepare_outbound(media_id: int) -> str:
    """Make an upload sendable: photos compressed to fit, audio to a voice note and video to MP4
    (with ffmpeg), then release the messages that wait for it. A file that can't be made sendable
    fails, with its reason, and so do those messages."""
    job = claim(media_id, (MediaStatus.PENDING.value,))
    if job is None:
        return "not_claimed"
    try:
        with tempfile.TemporaryDirectory(prefix="zapdesk-media-") as folder:
            original = Path(folder) / "original"
            if not job.original_key:
                raise MediaRejected(_("The attached file was deleted before it was sent."))
            get_storage().fetch(job.original_key, original)
            values = prepare_file(job, original, Path(folder))
    except MediaRejected as exc:
        return give_up(job, "media_invalid", exc.message)
    except Exception as exc:  # storage down, ffmpeg killed...: try again later, a few times
        log.exception("media %s: preparing failed", job.id)
        return retry_later(job, f"{exc.__class__.__name__}: {exc}"[:300])
    done = finish(
        job, status=MediaStatus.READY.value, original_key=None, error_code=None, error_title=None, **values
    )
    if not done:
        delete_keys(values.get("storage_key"), values.get("thumbnail_key"))
        return "lost"
    if job.original_key != values.get("storage_key"):
        delete_keys(job.original_key)
    release_waiting(job)
    return "ready"


def prepare_file(job: Job, original: Path, folder: Path) -> dict[str, Any]:
    """Store the sendable version of ``original``; the row's new values."""
    limit = limit_for(job.provider, job.kind).max_bytes
    if job.kind == "image":
        encoded = images.compress(original, limit)
        final = folder / f"final.{encoded.ext}"
        final.write_bytes(encoded.data)
        values = store_file(job.workspace_id, final, encoded.mime, encoded.ext)
        return {**values, "width": encoded.width, "height": encoded.height,
                "thumbnail_key": store_thumbnail(job.workspace_id, final)}  # fmt: skip
    if job.kind == "audio" and av.available():
        final = original
        if job.mime_type != "audio/ogg":
            final = folder / "voice.ogg"
            av.to_voice_note(original, final)
        _check_size(final, limit, job.kind)
        return {**store_file(job.workspace_id, final, "audio/ogg", "ogg"), "voice": True}
    if job.kind == "video" and av.available():
        found = av.probe(original)
        if found.video_codec is None:
            raise MediaRejected(_("The video has no picture."))
        if av.is_whatsapp_mp4(found) and original.stat().st_size <= limit:
            _check_size(original, limit, job.kind)
            return store_file(job.workspace_id, original, job.mime_type, _ext(job))
        final = folder / "video.mp4"
        av.to_mp4(original, final, limit, found.duration)
        _check_size(final, limit, job.kind)
        return store_file(job.workspace_id, final, "video/mp4", "mp4")
    _check_size(original, limit, job.kind)
    return store_file(job.workspace_id, original, job.mime_type, _ext(job))


def _ext(job: Job) -> str:
    name = job.filename or ""
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


def _waiting(job: Job) -> list[tuple[int, int | None]]:
    """(message id, queued outbox id) of the messages that carry this file."""
    from crm.inbox.models import Message
    from crm.whatsapp.models import Outbox, OutboxState

    rows: list[tuple[int, int | None]] = list(
        db.session.execute(
            select(Message.id, Outbox.id)
            .outerjoin(Outbox, (Outbox.message_id == Message.id) & (Outbox.state == OutboxState.QUEUED.value))
            .where(Message.media_file_id == job.id, Message.workspace_id == job.workspace_id)
        ).tuples()
    )
    db.session.commit()
    return rows


def release_waiting(job: Job) -> None:
    """The file is ready: its messages are due now, and every open thread shows it."""
    from crm.whatsapp.outbox import release_for_media

    outbox_ids = [outbox_id for _message_id, outbox_id in _waiting(job) if outbox_id is not None]
    announce(job.workspace_id, job.id)
    release_for_media(outbox_ids)


def fail_waiting(job: Job, code: str, title: str) -> None:
    """The file can't be sent: neither can the messages that wait for it."""
    from crm.inbox.models import Message
    from crm.realtime.broker import publish_after_commit
    from crm.whatsapp.models import Outbox, OutboxState

    for message_id, outbox_id in _waiting(job):
        message = db.session.get(Message, message_id)
        if message is None or message.status not in ("queued", "sending"):
            continue
        if outbox_id is not None:
            db.session.execute(
                update(Outbox)
                .where(Outbox.id == outbox_id, Outbox.state == OutboxState.QUEUED.value)
                .values(state=OutboxState.FAILED.value, last_error=title[:2000])
            )
        message.status = "failed"
        message.error_code = code[:32]
        message.error_title = title
        publish_after_commit(
            job.workspace_id,
            {"type": "message.status", "message_id": message.id, "conversation_id": message.conversation_id,
             "status": "failed"},
        )  # fmt: skip
    db.session.commit()
