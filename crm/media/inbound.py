"""What customers send: a media row at ingest, the file downloaded after the commit (Cloud API:
a worker; WebQR: the gateway that owns the session; the sandbox's simulator stores it at once),
kept as it came, and shown in the thread. A failed download can be tried again from the thread."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask_babel import gettext as _
from sqlalchemy import or_, select, update

from crm.db import utcnow
from crm.errors import Conflict, NotFound
from crm.extensions import db
from crm.media import images
from crm.media.limits import LARGEST_UPLOAD
from crm.media.models import MediaFile, MediaStatus
from crm.media.services import (
    LEASE,
    Job,
    Spooled,
    announce,
    claim,
    clean_filename,
    delete_keys,
    finish,
    give_up,
    retry_later,
    store_file,
    store_thumbnail,
)
from crm.media.sniff import Detected, MediaRejected, sniff
from crm.tenancy import get_scoped

if TYPE_CHECKING:
    from crm.inbox.models import Message

log = logging.getLogger(__name__)

# Cloud API media ids can be downloaded for 7 days (Meta keeps the file no longer).
DOWNLOAD_WINDOW = timedelta(days=7)
DOWNLOAD_MAX = LARGEST_UPLOAD  # the largest file WhatsApp carries (documents)

Fetch = Callable[[Job, Path, int], str]  # writes the file to the path, returns its MIME type


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


def download_inbound(media_id: int, fetch: Fetch, *, retrying: bool = False) -> str:
    """Download a customer's file with ``fetch`` (the provider's way), store it and show it."""
    from crm.whatsapp.providers.base import ErrorAction, ProviderError

    statuses = (
        (MediaStatus.PENDING.value, MediaStatus.FAILED.value) if retrying else (MediaStatus.PENDING.value,)
    )
    job = claim(media_id, statuses)
    if job is None:
        return "not_claimed"
    if job.provider_media_id and utcnow() - job.created_at > DOWNLOAD_WINDOW:
        return give_up(job, "media_expired", _("WhatsApp keeps files for 7 days; this one is older."))
    try:
        with tempfile.TemporaryDirectory(prefix="zapdesk-download-") as folder:
            path = Path(folder) / "download"
            claimed_mime = fetch(job, path, DOWNLOAD_MAX)
            values = keep_inbound_file(job, path, claimed_mime)
    except MediaRejected as exc:
        return give_up(job, exc.code, exc.message)
    except ProviderError as exc:
        if exc.action is ErrorAction.FAIL:
            return give_up(job, exc.code, exc.title)
        log.warning("media %s: download failed: %s", job.id, exc.code)
        return retry_later(job, exc.title)
    except Exception as exc:
        log.warning("media %s: download failed: %s", job.id, exc.__class__.__name__)
        return retry_later(job, exc.__class__.__name__)
    done = finish(
        job, status=MediaStatus.READY.value, error_code=None, error_title=None,
        source_encrypted=None,  # the file is ours now; its keys are not needed any more
        **values,
    )  # fmt: skip
    if not done:
        delete_keys(values.get("storage_key"), values.get("thumbnail_key"))
        return "lost"
    announce(job.workspace_id, job.id)
    return "ready"


def keep_inbound_file(job: Job, path: Path, claimed_mime: str) -> dict[str, Any]:
    """Store what the customer sent as it is. Its type is read from its content: a file whose
    content is not what the provider claims is kept as a download, never shown inline."""
    try:
        found: Detected | None = sniff(path)
    except Exception:  # refused for sending, or unreadable: for a received file, only a download
        found = None
    claimed = (claimed_mime or job.mime_type or "").split(";")[0].strip().lower()
    if found is not None and (found.mime.split(";")[0] == claimed or found.kind == job.kind):
        mime, ext = found.mime, found.ext
    else:
        mime, ext = "application/octet-stream", "bin"
    values = store_file(job.workspace_id, path, mime, ext)
    if job.kind in ("image", "sticker") and mime.startswith("image/"):
        values["thumbnail_key"] = store_thumbnail(job.workspace_id, path)
        if values["thumbnail_key"]:  # its size, so the thread keeps its place before it loads
            with contextlib.suppress(Exception):  # optional, like the thumbnail
                values["width"], values["height"] = images.upright_size(path)
    return values


def store_simulated(message_id: int, upload: Spooled) -> None:
    """The sandbox's customer phone sends a file: kept at once as if downloaded."""
    from crm.inbox.models import Message

    message = db.session.get(Message, message_id)
    assert message is not None and message.media_file_id is not None

    def from_upload(job: Job, path: Path, limit: int) -> str:
        shutil.copyfile(upload.path, path)
        return job.mime_type

    download_inbound(message.media_file_id, from_upload)


def message_of(media: MediaFile) -> Message:
    """The (first) message that carries this file."""
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


def request_retry(workspace_id: int, media_id: int) -> MediaFile:
    """An agent asks to download a failed file again."""
    media = get_scoped(MediaFile, workspace_id, media_id)
    if media.direction != "in" or media.status != MediaStatus.FAILED.value:
        raise Conflict(_("Only a failed download can be retried."), code="invalid_state")
    media.status = MediaStatus.PENDING.value
    media.attempts = 0
    media.error_code = media.error_title = None
    media.updated_at = utcnow()
    from crm.media.services import provider_of

    enqueue_download_after_commit(media.id, provider_of(media.account_id))
    db.session.commit()
    announce(workspace_id, media.id)
    return media


def enqueue_download_after_commit(media_id: int, provider: str) -> None:
    """Cloud API files are downloaded by a worker; WebQR files by the gateway that owns the
    number's session (it polls for pending downloads); the simulator stores its own."""
    if provider != "cloud":
        return
    from crm.media.tasks import download_media_task
    from crm.worker import enqueue_after_commit

    enqueue_after_commit(download_media_task, media_id)


def download_from_cloud(media_id: int) -> str:
    """A worker's download of a Cloud API file: ``GET /<media_id>``, then its URL with the token."""
    from crm.whatsapp.models import WhatsAppAccount
    from crm.whatsapp.providers.cloud import CloudClient

    media = db.session.get(MediaFile, media_id)
    account = db.session.get(WhatsAppAccount, media.account_id) if media and media.account_id else None
    if media is None or account is None or account.provider != "cloud":
        db.session.commit()
        return "not_cloud"  # another provider's file (or a deleted one): not a worker's to fetch
    client = CloudClient(account)
    db.session.commit()

    def fetch(job: Job, path: Path, limit: int) -> str:
        if not job.provider_media_id:
            raise MediaRejected(_("WhatsApp gave no id for this file."), code="media_unavailable")
        with path.open("wb") as out:
            return client.download_media_to(job.provider_media_id, out, limit)

    return download_inbound(media_id, fetch)


def pending_downloads(account_id: int, limit: int = 20) -> list[int]:
    """Files of this number waiting to be downloaded (or whose downloader died), oldest first."""
    now = utcnow()
    found = list(
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
    db.session.commit()
    return found
