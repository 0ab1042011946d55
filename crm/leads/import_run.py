"""Running a CSV import: one run at a time per import, resumable, and a reconciler for lost ones.

A run reads the stored file in batches of ``BATCH_ROWS`` records on a helper thread while the
previous batch is merged (``crm.leads.import_merge``: in parts, each committing with the
checkpoint's state), so a run that dies is resumed, by a retry of the task or by
``reconcile_imports``, right after what it committed. The queue is not trusted to keep its
jobs: the database says what still has to run (``status`` and ``heartbeat_at``, the lease).
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import Table, and_, delete, func, or_, select, update

from crm.db import utcnow
from crm.extensions import db
from crm.leads.csvfile import MalformedCSV
from crm.leads.import_copy import PARTS, render_copy
from crm.leads.import_merge import Job, merge_batch, owned_by
from crm.leads.import_rows import Columns, ReadSpec, Reasons, prefetched, read_batches
from crm.leads.imports import ImportStatus
from crm.leads.models import LeadImport
from crm.leads.services import MAX_FIELDS, MAX_TAGS_PER_LEAD, clean_tags
from crm.media.storage import get_storage

log = logging.getLogger(__name__)

BATCH_ROWS = 20_000
# A run renews its lease with every part it commits (a second or two); one silent this long has died.
LEASE = timedelta(minutes=5)
QUEUE_GRACE = timedelta(minutes=1)  # a queued import not picked up by then lost its task
DRAFT_DAYS = 2  # an upload never started is removed after this
MAX_ATTEMPTS = 5


def run_import(workspace_id: int, import_id: int, *, batch_rows: int | None = None) -> str:
    """Run an import to its end, from where an earlier run stopped. Returns what happened.

    Only one run at a time owns an import (``_claim``); a run that can't read the stored file
    marks the import failed. Any other error gives the import back (queued) and is raised, so the
    task's retry, or the reconciler, resumes it; after ``MAX_ATTEMPTS`` runs it fails for good.
    """
    claimed = _claim(workspace_id, import_id)
    if claimed is None:
        return "not_claimed"
    job, spec_values = claimed
    storage = get_storage()
    try:
        with tempfile.TemporaryDirectory(prefix="zapdesk-import-") as folder:
            path = Path(folder) / "import.csv"
            key = spec_values["storage_key"]
            if not key or not storage.exists(key):
                return _fail(job, _("The uploaded file is gone: upload it again."))
            storage.fetch(key, path)
            rows = batch_rows or BATCH_ROWS
            # A batch some of whose parts are committed is cut again as it was then.
            first_rows, first_parts = (job.parts_rows, job.parts_count) if job.parts_merged else (rows, PARTS)
            spec = ReadSpec(
                path=path,
                batch_rows=rows,
                first_batch_rows=first_rows,
                skip=job.processed_rows,
                **spec_values["read"],
            )
            batches = read_batches(spec)
            if db.session.get_bind().dialect.name == "postgresql":
                cuts = itertools.chain([first_parts], itertools.repeat(PARTS))
                batches = map(render_copy, batches, cuts)  # lazily: on the reading thread
            for batch in prefetched(batches):
                if not merge_batch(job, batch):
                    log.warning("lead import %s: taken over by another run", job.id)
                    return "lost_lease"
    except (UnicodeDecodeError, MalformedCSV) as exc:  # the stored file changed since the upload
        db.session.rollback()
        return _fail(job, _("The file can't be read any more (%(error)s).", error=str(exc)[:200]))
    except BaseException:
        db.session.rollback()
        _give_back(job)
        raise
    return _finish(job, key)


def _claim(workspace_id: int, import_id: int) -> tuple[Job, dict[str, Any]] | None:
    """Take an import that is queued, or running under a lease that ran out. Atomic: of two
    workers, one gets it."""
    now = utcnow()
    imports = cast(Table, LeadImport.__table__)
    claimed = db.session.execute(
        update(imports)
        .where(
            imports.c.id == import_id,
            imports.c.workspace_id == workspace_id,
            or_(
                imports.c.status == ImportStatus.QUEUED,
                and_(imports.c.status == ImportStatus.RUNNING, imports.c.heartbeat_at < now - LEASE),
            ),
        )
        .values(
            status=ImportStatus.RUNNING,
            heartbeat_at=now,
            started_at=func.coalesce(imports.c.started_at, now),
            attempts=imports.c.attempts + 1,
        )
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        db.session.rollback()
        return None
    row = db.session.get(LeadImport, import_id)
    assert row is not None
    db.session.refresh(row)
    job = Job(
        id=row.id,
        workspace_id=workspace_id,
        user_id=row.user_id,
        detail=row.filename,
        update=row.on_duplicate == "update",
        opt_in=row.opt_in,
        processed_rows=row.processed_rows,
        reasons=_reasons(row.locale),
        attempt=row.attempts,
        parts_merged=row.parts_merged,
        parts_rows=row.parts_rows,
        parts_count=row.parts_count,
    )
    tag_names = clean_tags(row.tags or [])
    values = {
        "storage_key": row.storage_key,
        "read": {
            "encoding": row.encoding,
            "delimiter": row.delimiter,
            "columns": Columns.from_mapping(row.mapping or {"phone": 0}),
            "region": row.default_country,
            "update": job.update,
            "tags": tuple((name, name.casefold()) for name in tag_names),
            "reasons": job.reasons,
        },
    }
    if row.attempts > MAX_ATTEMPTS:
        db.session.commit()
        _fail(job, _("The import stopped %(n)d times before its end; it was given up.", n=MAX_ATTEMPTS))
        return None
    db.session.commit()
    return job, values


def _reasons(locale: str | None) -> Reasons:
    """The texts of the report, in the language of whoever started the import (tasks otherwise
    speak the default language)."""
    with force_locale(locale or current_app.config["BABEL_DEFAULT_LOCALE"]):
        return Reasons(
            no_phone=_("No phone number."),
            bad_phone=_("Not a phone number: %(value)s"),
            bad_email=_("Not a valid email address: %(value)s"),
            long_name=_("The name is longer than 200 characters."),
            long_tag=_("A tag is longer than 64 characters: %(value)s"),
            long_field=_("%(field)s is longer than 1000 characters."),
            too_many_fields=_("The lead would have more than %(n)d custom fields.", n=MAX_FIELDS),
            too_many_tags=_("The lead would have more than %(n)d tags.", n=MAX_TAGS_PER_LEAD),
        )


def _finish(job: Job, key: str | None) -> str:
    now = utcnow()
    done = db.session.execute(
        update(LeadImport)
        .where(owned_by(job))
        .values(status=ImportStatus.DONE, finished_at=now, heartbeat_at=None, storage_key=None)
    )
    db.session.commit()
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return "lost_lease"
    if key:
        get_storage().delete(key)  # the report keeps the bad rows; the leads are in the database
    log.info("lead import %s done: %s rows", job.id, job.processed_rows)
    return "done"


def _fail(job: Job, reason: str) -> str:
    lead_import = db.session.get(LeadImport, job.id)
    if lead_import is not None:
        lead_import.status = ImportStatus.FAILED
        lead_import.failure = reason[:500]
        lead_import.finished_at = utcnow()
        lead_import.heartbeat_at = None
        key, lead_import.storage_key = lead_import.storage_key, None
        db.session.commit()
        if key:
            get_storage().delete(key)
    log.warning("lead import %s failed: %s", job.id, reason)
    return "failed"


def _give_back(job: Job) -> None:
    """After an unexpected error: queued again (with a fresh time, so the reconciler waits a
    minute), unless another run owns it by now."""
    try:
        db.session.execute(
            update(LeadImport).where(owned_by(job)).values(status=ImportStatus.QUEUED, heartbeat_at=utcnow())
        )
        db.session.commit()
    except Exception:  # the database is what failed: the lease runs out and the reconciler resumes
        db.session.rollback()
        log.exception("lead import %s: could not give it back", job.id)


def reconcile_imports() -> dict[str, int]:
    """The periodic safety net: imports whose task was lost (queued for more than a minute) or
    whose run died (running, lease out) are queued again; drafts never started are removed."""
    from crm.leads.tasks import import_leads_task

    now = utcnow()
    stale = db.session.execute(
        select(LeadImport.workspace_id, LeadImport.id).where(
            or_(
                and_(LeadImport.status == ImportStatus.QUEUED, LeadImport.heartbeat_at < now - QUEUE_GRACE),
                and_(LeadImport.status == ImportStatus.RUNNING, LeadImport.heartbeat_at < now - LEASE),
            )
        )
    ).all()
    drafts = db.session.execute(
        select(LeadImport.id, LeadImport.storage_key).where(
            LeadImport.status == ImportStatus.DRAFT, LeadImport.created_at < now - timedelta(days=DRAFT_DAYS)
        )
    ).all()
    if drafts:
        db.session.execute(delete(LeadImport).where(LeadImport.id.in_([d.id for d in drafts])))
    db.session.commit()
    for draft in drafts:
        if draft.storage_key:
            get_storage().delete(draft.storage_key)
    for workspace_id, import_id in stale:
        import_leads_task(workspace_id, import_id)
    return {"requeued": len(stale), "drafts_removed": len(drafts)}
