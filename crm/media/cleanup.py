"""Files go with what carried them, and nothing is left behind: rows no message carries any more
and stored files no row names are removed; lost jobs are handed to the queue again."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import or_, select

from crm.db import utcnow
from crm.extensions import db
from crm.media.models import MediaFile, MediaStatus
from crm.media.services import KEY_PATTERN, LEASE, delete_keys
from crm.media.storage import get_storage

log = logging.getLogger(__name__)


def delete_unreferenced(media_ids: list[int]) -> int:
    """Delete the rows and files of these media that no message carries any more (after the
    messages, or the lead and its conversations, were deleted). A file being worked on right now
    is left to the sweep: its job's result is then dropped, not written to a deleted row. A file
    an archived message carries stays for its restore (``crm.archiving``)."""
    from crm.archiving.models import ArchivedMedia
    from crm.inbox.models import Message

    removed = 0
    for media_id in media_ids:
        media = db.session.get(MediaFile, media_id)
        if media is None or media.status == MediaStatus.WORKING.value:
            continue
        in_use = db.session.scalar(select(Message.id).where(Message.media_file_id == media_id).limit(1))
        archived = db.session.scalar(
            select(ArchivedMedia.media_file_id).where(ArchivedMedia.media_file_id == media_id).limit(1)
        )
        if in_use is not None or archived is not None:
            continue
        keys = (media.storage_key, media.original_key, media.thumbnail_key)
        db.session.delete(media)
        db.session.commit()
        delete_keys(*keys)
        removed += 1
    db.session.commit()
    return removed


def sweep_orphans(grace: timedelta = timedelta(hours=6)) -> dict[str, int]:
    """Remove what nothing points at any more: media rows no message carries (older than
    ``grace``, so an upload on its way to a message is never taken), and stored files no row
    names. Only keys this app makes are ever touched: a bucket or folder shared with anything
    else keeps that else. Files archived messages carry are in use (``crm.archiving``)."""
    from crm.archiving.models import ArchivedMedia
    from crm.inbox.models import Message

    cutoff = utcnow() - grace
    unused = list(
        db.session.scalars(
            select(MediaFile.id)
            .where(
                MediaFile.created_at < cutoff,
                MediaFile.status != MediaStatus.WORKING.value,
                ~select(Message.id).where(Message.media_file_id == MediaFile.id).exists(),
                ~select(ArchivedMedia.media_file_id)
                .where(ArchivedMedia.media_file_id == MediaFile.id)
                .exists(),
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
    db.session.commit()
    storage = get_storage()
    files = 0
    for key, modified in list(storage.stored_keys()):
        if KEY_PATTERN.match(key) and key not in known and modified < cutoff:
            storage.delete(key)
            files += 1
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
