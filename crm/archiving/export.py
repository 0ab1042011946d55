"""Archiving a workspace's old conversations (``flask crm archive`` and the nightly schedule).

A run, per workspace, holds the workspace's run lock (``runlock``) and:

1. finishes what an earlier run left: an archive whose file was verified ("deleting") has its
   deletion resumed; one still "exporting" died before its file was verified, so nothing of it
   was deleted: it is abandoned (its rows and any stored file removed);
2. exports (``writer``), in batches of conversations streamed to a local gzip file, the
   conversations whose last message is older than the cut-off (``candidates``); per conversation
   it records how many messages and notes it wrote, their period and the media files they carry;
3. saves the file through the media storage, then verifies it: fetched back through the storage,
   its SHA-256 compared with the one computed while writing and every line read, each
   conversation's counts compared with what was recorded. Any difference: the archive is failed,
   its file removed, and nothing is deleted;
4. deletes what it archived (``purge``).
"""

from __future__ import annotations

import logging
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import delete, func, select, update

from crm.archiving.candidates import old_conversations
from crm.archiving.jsonl import ArchiveCorrupt, ArchiveMissing, fetch_verified, file_sha256
from crm.archiving.models import ArchivedConversation, ArchiveState, MessageArchive
from crm.archiving.runlock import workspace_run_lock
from crm.archiving.writer import verify_export, write_export
from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Conversation

log = logging.getLogger(__name__)


@dataclass
class ArchiveResult:
    workspace_id: int
    archive_id: int
    storage_key: str
    state: str
    resumed: bool = False
    conversations: int = 0  # in the file
    messages: int = 0
    notes: int = 0
    bytes: int = 0
    sha256: str | None = None
    archived: int = 0  # conversations now only in the file
    skipped: int = 0  # changed after the export: left in the database
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


def result_of(archive_id: int, resumed: bool = False) -> ArchiveResult:
    archive = db.session.get(MessageArchive, archive_id)
    assert archive is not None
    by_state: dict[str, int] = {
        state: count
        for state, count in db.session.execute(
            select(ArchivedConversation.state, func.count())
            .where(ArchivedConversation.archive_id == archive_id)
            .group_by(ArchivedConversation.state)
        )
    }
    return ArchiveResult(
        workspace_id=archive.workspace_id,
        archive_id=archive.id,
        storage_key=archive.storage_key,
        state=archive.state,
        resumed=resumed,
        conversations=archive.conversations,
        messages=archive.messages,
        notes=archive.notes,
        bytes=archive.bytes,
        sha256=archive.sha256,
        archived=sum(n for s, n in by_state.items() if s in ("archived", "restored")),
        skipped=by_state.get("skipped", 0),
        error=archive.error,
    )


def archive_workspace(workspace_id: int, cutoff: datetime, *, source: str) -> list[ArchiveResult]:
    """Finish earlier runs, then archive the workspace's conversations older than ``cutoff``. One
    result per archive touched; a failed export or verification is a result with an error (and
    nothing deleted), not an exception. ArchiveBusy if another run holds the workspace."""
    from crm.archiving.purge import purge_archive

    with workspace_run_lock(workspace_id):
        results = _finish_earlier_runs(workspace_id)
        if db.session.scalar(
            select(Conversation.id).where(*old_conversations(workspace_id, cutoff)).limit(1)
        ):
            with tempfile.TemporaryDirectory(prefix="zapdesk-archive-") as folder:
                archive_id = _export_and_verify(workspace_id, cutoff, source, Path(folder))
                if archive_id is not None:
                    archive = db.session.get(MessageArchive, archive_id)
                    if archive is not None and archive.state == ArchiveState.DELETING.value:
                        purge_archive(archive_id, Path(folder) / "verified.jsonl.gz")
                    results.append(result_of(archive_id))
        return results


def resume_workspace(workspace_id: int) -> list[ArchiveResult]:
    """Only finish what earlier runs left (the nightly task, for a workspace not on a schedule)."""
    with workspace_run_lock(workspace_id):
        return _finish_earlier_runs(workspace_id)


def _finish_earlier_runs(workspace_id: int) -> list[ArchiveResult]:
    from crm.archiving.purge import purge_archive

    results = []
    unfinished = db.session.scalars(
        select(MessageArchive.id)
        .where(
            MessageArchive.workspace_id == workspace_id,
            MessageArchive.state.in_([ArchiveState.EXPORTING.value, ArchiveState.DELETING.value]),
        )
        .order_by(MessageArchive.id)
    ).all()
    for archive_id in unfinished:
        archive = db.session.get(MessageArchive, archive_id)
        assert archive is not None
        if archive.state == ArchiveState.EXPORTING.value:
            _abandon(archive_id, _("The run stopped before its file was verified; nothing was deleted."))
        else:
            key, sha256 = archive.storage_key, archive.sha256
            db.session.commit()
            try:
                with tempfile.TemporaryDirectory(prefix="zapdesk-archive-") as folder:
                    purge_archive(archive_id, fetch_verified(key, sha256, Path(folder) / "verified.jsonl.gz"))
            except (ArchiveMissing, ArchiveCorrupt) as exc:
                # Some of it may be deleted already: it stays "deleting" for a later run, and says why.
                db.session.rollback()
                log.error("archive %s: cannot finish its deletion: %s", archive_id, exc.message)
                result = result_of(archive_id, resumed=True)
                result.error = exc.message
                results.append(result)
                continue
        results.append(result_of(archive_id, resumed=True))
    return results


def _abandon(archive_id: int, reason: str) -> None:
    """A run that did not get to delete anything: its rows go, its file (if stored) too."""
    from crm.media.storage import get_storage

    db.session.rollback()
    archive = db.session.get(MessageArchive, archive_id)
    assert archive is not None
    db.session.execute(delete(ArchivedConversation).where(ArchivedConversation.archive_id == archive_id))
    archive.state, archive.error, archive.finished_at = ArchiveState.FAILED.value, reason, utcnow()
    key = archive.storage_key
    db.session.commit()
    try:
        get_storage().delete(key)
    except Exception:  # the file is unusable anyway; a storage that can't be reached keeps it
        log.exception("archive %s: could not remove the file %s", archive_id, key)


def new_storage_key(workspace_id: int) -> str:
    return f"archives/w{workspace_id}/{utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(6)}.jsonl.gz"


def _export_and_verify(workspace_id: int, cutoff: datetime, source: str, folder: Path) -> int | None:
    """The new archive's id, verified and "deleting" (or "failed" with why); None when nothing
    was left to archive by the time it ran. The verified file is left in ``folder``."""
    from crm.media.storage import get_storage

    archive = MessageArchive(
        workspace_id=workspace_id, source=source, storage_key=new_storage_key(workspace_id), cutoff=cutoff
    )
    db.session.add(archive)
    db.session.commit()
    archive_id, key = archive.id, archive.storage_key
    try:
        written = folder / "written.jsonl.gz"
        counts = write_export(workspace_id, archive_id, cutoff, written)
        if counts.conversations == 0:
            db.session.execute(delete(MessageArchive).where(MessageArchive.id == archive_id))
            db.session.commit()
            return None
        sha256, size = file_sha256(written)
        try:
            with written.open("rb") as fh:
                get_storage().save(key, fh, "application/gzip")
        except Exception as exc:  # a full disk, S3 unreachable or refusing
            error = type(exc).__name__
            raise ArchiveMissing(
                _("The archive file %(key)s could not be written: %(error)s", key=key, error=error)
            ) from exc
        written.unlink()
        fetched = fetch_verified(key, sha256, folder / "verified.jsonl.gz")
        verify_export(workspace_id, archive_id, key, fetched, counts)
    except (ArchiveMissing, ArchiveCorrupt) as exc:
        log.error("archive %s: verification failed, nothing deleted: %s", archive_id, exc.message)
        _abandon(archive_id, exc.message)
        return archive_id
    except BaseException as exc:
        _abandon(
            archive_id, _("The export failed (%(error)s); nothing was deleted.", error=type(exc).__name__)
        )
        raise
    db.session.execute(
        update(MessageArchive)
        .where(MessageArchive.id == archive_id)
        .values(
            state=ArchiveState.DELETING.value,
            sha256=sha256,
            bytes=size,
            conversations=counts.conversations,
            messages=counts.messages,
            notes=counts.notes,
        )
    )
    db.session.commit()
    return archive_id
