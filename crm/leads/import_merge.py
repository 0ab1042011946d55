"""Merging one batch of an import into the leads: set-based, in one transaction per part.

A batch is cut in parts by phone (one part on SQLite, ``import_copy.PARTS`` on PostgreSQL). Each part
commits its leads, tags, consent events, bad rows (part 0 has them), counters and its bit in
``parts_merged`` together; the last part of the batch to commit moves the ``processed_rows``
checkpoint past it. So a crash loses at most the parts in flight and never leaves half of one:
the next run starts at the checkpoint and merges the parts not committed, cutting that batch the
same way (``parts_rows``, ``parts_count``). The checkpoint and the run's attempt number are
also the lease: a part commits only if they are still what this run knows, so two workers that
both think they own an import can't both merge the same rows.

PostgreSQL (here): each part is COPYed into temporary tables and merged by a few ``INSERT …
SELECT … ON CONFLICT`` / ``UPDATE … FROM`` statements, never row by row. One backend inserting
the leads (heap, indexes, trigram indexes, keys) was what held a large import, so the parts of a
batch are merged at once, each on a connection of its own; the leads of a batch are keyed by
phone, so the parts never touch the same lead. SQLite (one writer at a time): the batch is one
part, merged with ``executemany`` (``crm.leads.import_sqlite``).

Rules, the same on both: a phone that is already a lead (the trash included) is skipped, or
with ``update`` gets the row's non-empty name, email and custom fields, the tags added, and is
restored from the trash, unless that would leave the lead with more custom fields or tags than a
lead may have (50 of each, as everywhere else): then the row, and every row of the same phone in
the batch (they are applied together), is a bad row on its own line and changes nothing.
``opt_in`` opts in new leads, and existing ones only when they never
opted out: an import never overrides someone who said stop. Every opt-in is in the consent
history (source ``import``, the file name as detail).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from flask import current_app
from sqlalchemy import ColumnElement, Table, and_, case, text, update

from crm.db import utcnow
from crm.extensions import db
from crm.leads.import_copy import render_copy
from crm.leads.import_rows import Batch, Part, Reasons
from crm.leads.imports import ImportStatus
from crm.leads.models import (
    ConsentSource,
    LeadImport,
    LeadSource,
)

log = logging.getLogger(__name__)


@dataclass
class Job:
    """An import being run, as plain values read once when it was claimed."""

    id: int
    workspace_id: int
    user_id: int | None
    detail: str  # the consent history's detail: the file's name
    update: bool
    opt_in: bool
    processed_rows: int
    reasons: Reasons  # the bad rows' reasons, in the language of whoever started it
    attempt: int = 0  # the import's attempts when this run claimed it: the run's own number
    parts_merged: int = 0  # the parts of the batch at the checkpoint already committed (bits)
    parts_rows: int = 0  # that batch's records, and in how many parts it was cut
    parts_count: int = 0


@dataclass(frozen=True)
class Counts:
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: int = 0


def owned_by(job: Job) -> ColumnElement[bool]:
    """The import's row as this run left it: still running, claimed by this run (a later claim
    counts another attempt), its checkpoint where the run put it. Every write of a run is
    conditioned on it, so a run that lost the import changes nothing."""
    return and_(
        LeadImport.id == job.id,
        LeadImport.status == ImportStatus.RUNNING,
        LeadImport.attempts == job.attempt,
        LeadImport.processed_rows == job.processed_rows,
    )


def merge_batch(job: Job, batch: Batch) -> bool:
    """Merge ``batch`` (its parts not committed yet, at once) and move the checkpoint past it.
    False when this run no longer owns the import (another worker took it over, or it was
    finished): a part merged by such a run is rolled back."""
    now = utcnow()
    if db.session.get_bind().dialect.name == "postgresql":
        parts = batch.parts or render_copy(batch).parts
    else:
        # SQLite reads existing leads before it writes: the lease's UPDATE first opens the write
        # transaction, so no other writer (a webhook making a lead) comes in between.
        owned = db.session.execute(update(LeadImport).where(owned_by(job)).values(heartbeat_at=now))
        if owned.rowcount != 1:  # type: ignore[attr-defined]
            db.session.rollback()
            return False
        parts = [Part(0, batch.lead_count, batch.occurrences, batch.error_count)]
    todo = [part for part in parts if not job.parts_merged & (1 << part.index)]

    def merge(part: Part) -> bool:
        return _merge_part(job, batch, part, len(parts), now)

    if not all(_at_once(merge, todo)):
        return False
    job.processed_rows += batch.rows
    job.parts_merged = job.parts_rows = job.parts_count = 0
    return True


def _at_once(merge: Callable[[Part], bool], parts: list[Part]) -> list[bool]:
    """``merge`` of each part, the first on this thread and the others on threads of their own
    (each with its own database session, so its own connection); the first error is raised once
    every part is done."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    results: list[bool] = []
    failures: list[BaseException] = []

    def run(part: Part) -> None:
        with app.app_context():
            try:
                results.append(merge(part))
            except BaseException as exc:  # raised on the import's own thread below
                log.warning("lead import: merging part %s failed", part.index, exc_info=True)
                failures.append(exc)
            finally:
                db.session.remove()

    helpers = [threading.Thread(target=run, args=(part,), name="lead-import-part") for part in parts[1:]]
    for helper in helpers:
        helper.start()
    try:
        if parts:
            results.append(merge(parts[0]))
    finally:
        for helper in helpers:
            helper.join()
    if failures:
        raise failures[0]
    return results


def _merge_part(job: Job, batch: Batch, part: Part, parts: int, now: datetime) -> bool:
    """One part of the batch, its counters and its bit, in one transaction; the last part to
    commit moves the checkpoint past the batch. False (and rolled back) when the run lost the
    import. Two parts' final updates of the import's row take turns, after their work."""
    if db.session.get_bind().dialect.name == "postgresql":
        merged = _merge_postgresql(job, part, now)
    else:
        from crm.leads.import_sqlite import merge_sqlite

        merged = merge_sqlite(job, batch, now)
    counts = _counts(job, part, merged)
    imports = cast(Table, LeadImport.__table__)
    bit = 1 << part.index
    with_this = imports.c.parts_merged.op("|")(bit)
    last = with_this == (1 << parts) - 1
    done = db.session.execute(
        update(imports)
        .where(owned_by(job), imports.c.parts_merged.op("&")(bit) == 0)
        .values(
            processed_rows=imports.c.processed_rows + case((last, batch.rows), else_=0),
            parts_merged=case((last, 0), else_=with_this),
            parts_rows=case((last, 0), else_=batch.rows),
            parts_count=case((last, 0), else_=parts),
            created=imports.c.created + counts.created,
            updated=imports.c.updated + counts.updated,
            skipped=imports.c.skipped + counts.skipped,
            errors_count=imports.c.errors_count + counts.errors,
            heartbeat_at=now,
        )
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        db.session.rollback()
        return False
    db.session.commit()
    return True


@dataclass(frozen=True)
class Merged:
    """What a backend's merge of a batch did: ``created`` leads, the file rows of those
    (``created_rows``: a phone may be on several) and of the existing leads updated
    (``matched_rows``), and the bad rows recorded."""

    created: int
    created_rows: int
    matched_rows: int
    errors: int
    refused: int = 0  # rows whose update would have overfilled their lead (among ``errors``)


def _counts(job: Job, part: Part, merged: Merged) -> Counts:
    """The import's counters for a part: each row is created, updated, skipped or an error."""
    created, created_rows, matched_rows = merged.created, merged.created_rows, merged.matched_rows
    errors, total = merged.errors, part.occurrences - merged.refused
    if job.update:
        updated = matched_rows + (created_rows - created)
        return Counts(created, updated, total - matched_rows - created_rows, errors)
    return Counts(created, 0, total - created, errors)


# --- PostgreSQL ---------------------------------------------------------------------------------

_STAGE = """
CREATE TEMPORARY TABLE import_rows (
    line integer, phone text, name text, email text, tag_names text[], tag_keys text[],
    fields jsonb, occurrences integer, more_lines integer[]
) ON COMMIT DROP;
CREATE TEMPORARY TABLE import_bad (line integer, reason text, raw text) ON COMMIT DROP
"""

# An update that would leave a lead with more custom fields or tags than a lead may have: the row
# leaves the batch and becomes a bad row, with each row of the phone folded into it (its lead
# unchanged); the count is of those rows.
# A lead saved without custom fields holds JSON null (not SQL NULL): NULLIF makes it an empty
# object before merging, or ``null || {...}`` would be an array.
_REFUSE_OVERFULL = """
WITH counted AS (
    SELECT s.line,
        CASE WHEN s.fields IS NULL THEN 0 ELSE (SELECT count(*) FROM jsonb_object_keys(
            COALESCE(NULLIF(l.custom_fields::jsonb, 'null'), '{}'::jsonb) || s.fields)) END AS fields,
        CASE WHEN s.tag_keys IS NULL THEN 0 ELSE (SELECT count(*) FROM (
            SELECT t.key FROM lead_tags t WHERE t.lead_id = l.id UNION SELECT unnest(s.tag_keys)) k)
            END AS tags
    FROM import_rows s JOIN leads l ON l.workspace_id = :ws AND l.phone = s.phone AND l.kind = 'person'
), over AS (
    DELETE FROM import_rows s USING counted a
    WHERE s.line = a.line AND (a.fields > :max_fields OR a.tags > :max_tags)
    RETURNING s.line, s.more_lines, s.occurrences, a.fields > :max_fields AS fields_over
), bad AS (
    INSERT INTO import_bad (line, reason, raw)
    SELECT l.line, CASE WHEN o.fields_over THEN :too_many_fields ELSE :too_many_tags END, ''
    FROM over o, unnest(ARRAY[o.line] || COALESCE(o.more_lines, '{}')) AS l(line)
)
SELECT COALESCE(sum(occurrences), 0) FROM over
"""

_UPDATE_EXISTING = """
WITH old AS (
    SELECT l.id, s.line, s.occurrences, l.opt_in, l.opted_out_at
    FROM import_rows s JOIN leads l ON l.workspace_id = :ws AND l.phone = s.phone AND l.kind = 'person'
    FOR UPDATE OF l
), changed AS (
    UPDATE leads AS l SET
        name = CASE WHEN s.name <> '' THEN s.name ELSE l.name END,
        email = COALESCE(s.email, l.email),
        custom_fields = CASE WHEN s.fields IS NULL THEN l.custom_fields
            ELSE (COALESCE(NULLIF(l.custom_fields::jsonb, 'null'), '{}'::jsonb) || s.fields)::json END,
        deleted_at = NULL,
        opt_in = l.opt_in OR (CAST(:opt_in AS boolean) AND l.opted_out_at IS NULL),
        opted_in_at = CASE WHEN :opt_in AND NOT l.opt_in AND l.opted_out_at IS NULL
            THEN :now ELSE l.opted_in_at END,
        updated_at = :now
    FROM old o JOIN import_rows s ON s.line = o.line
    WHERE l.id = o.id
    RETURNING l.id
), tagged AS (
    INSERT INTO lead_tags (workspace_id, lead_id, name, key)
    SELECT :ws, o.id, t.name, t.key
    FROM old o JOIN import_rows s ON s.line = o.line, unnest(s.tag_names, s.tag_keys) AS t(name, key)
    ON CONFLICT (lead_id, workspace_id, key) DO NOTHING
), consented AS (
    INSERT INTO consent_events (workspace_id, lead_id, opted_in, source, user_id, detail, created_at)
    SELECT :ws, o.id, true, :source, :user_id, :detail, :now FROM old o
    WHERE :opt_in AND NOT o.opt_in AND o.opted_out_at IS NULL
)
SELECT count(*), COALESCE(sum(occurrences), 0) FROM old
"""

_INSERT_NEW = """
WITH new AS (
    INSERT INTO leads (workspace_id, phone, name, email, notes, source, kind, custom_fields,
                       opt_in, opted_in_at, created_at, updated_at)
    SELECT :ws, s.phone, s.name, s.email, '', :lead_source, 'person', s.fields::json,
           :opt_in, CASE WHEN :opt_in THEN CAST(:now AS timestamptz) END, :now, :now
    FROM import_rows s
    ORDER BY s.line
    ON CONFLICT (workspace_id, phone) DO NOTHING
    RETURNING id, phone
), tagged AS (
    INSERT INTO lead_tags (workspace_id, lead_id, name, key)
    SELECT :ws, n.id, t.name, t.key
    FROM new n JOIN import_rows s ON s.phone = n.phone, unnest(s.tag_names, s.tag_keys) AS t(name, key)
), consented AS (
    INSERT INTO consent_events (workspace_id, lead_id, opted_in, source, user_id, detail, created_at)
    SELECT :ws, n.id, true, :source, :user_id, :detail, :now FROM new n WHERE :opt_in
)
SELECT count(*), COALESCE(sum(s.occurrences), 0) FROM new n JOIN import_rows s ON s.phone = n.phone
"""

_INSERT_ERRORS = """
INSERT INTO lead_import_errors (workspace_id, import_id, line, reason, raw)
SELECT :ws, :import_id, line, reason, raw FROM import_bad
ON CONFLICT (import_id, line) DO NOTHING
"""


def _merge_postgresql(job: Job, part: Part, now: datetime) -> Merged:
    connection = db.session.connection()
    # The staging tables have no statistics, and the guesses make the planner compile the merge
    # with JIT: ~20 ms per statement for a plan that runs in a second anyway.
    connection.exec_driver_sql("SET LOCAL jit = off")
    connection.exec_driver_sql(_STAGE)
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        if part.copy_leads:
            with cursor.copy(
                "COPY import_rows (line, phone, name, email, tag_names, tag_keys, fields, occurrences, "
                "more_lines) FROM STDIN"
            ) as copy:
                copy.write(part.copy_leads)
        if part.copy_errors:
            with cursor.copy("COPY import_bad (line, reason, raw) FROM STDIN") as copy:
                copy.write(part.copy_errors)
    params = {
        "ws": job.workspace_id,
        "import_id": job.id,
        "opt_in": job.opt_in,
        "now": now,
        "user_id": job.user_id,
        "detail": job.detail[:200],
        "source": ConsentSource.IMPORT.value,
        "lead_source": LeadSource.IMPORT.value,
    }
    matched_rows = refused = 0
    if job.update and part.lead_count:
        from crm.leads.services import MAX_FIELDS, MAX_TAGS_PER_LEAD

        limits = {
            "max_fields": MAX_FIELDS,
            "max_tags": MAX_TAGS_PER_LEAD,
            "too_many_fields": job.reasons.too_many_fields,
            "too_many_tags": job.reasons.too_many_tags,
        }
        refused = db.session.execute(text(_REFUSE_OVERFULL), {**params, **limits}).scalar_one()
        _matched, matched_rows = db.session.execute(text(_UPDATE_EXISTING), params).one()
    created, created_rows = 0, 0
    if part.lead_count:
        created, created_rows = db.session.execute(text(_INSERT_NEW), params).one()
    errors = 0
    if part.error_count or refused:
        errors = db.session.execute(text(_INSERT_ERRORS), params).rowcount  # type: ignore[attr-defined]
    return Merged(created, created_rows, matched_rows, errors, refused)
