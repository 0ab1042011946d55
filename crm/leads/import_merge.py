"""Merging one batch of an import into the leads: one transaction per batch, set-based.

Each batch commits its leads, tags, consent events, bad rows, counters and the ``processed_rows``
checkpoint together, so a crash loses at most the batch in flight and never leaves half of one:
the next run starts after the last committed batch. The checkpoint is also the lease: a batch
commits only if ``processed_rows`` is still what this run last wrote, so two workers that both
think they own an import can't both merge the same rows.

PostgreSQL (here): the batch is COPYed into temporary tables and merged by a few ``INSERT …
SELECT … ON CONFLICT`` / ``UPDATE … FROM`` statements, never row by row. SQLite: the same steps
with ``executemany`` (``crm.leads.import_sqlite``).

Rules, the same on both: a phone that is already a lead (the trash included) is skipped, or
with ``update`` gets the row's non-empty name, email and custom fields, the tags added, and is
restored from the trash, unless that would leave the lead with more custom fields or tags than a
lead may have (50 of each, as everywhere else): then the row is a bad row and changes nothing.
``opt_in`` opts in new leads, and existing ones only when they never
opted out: an import never overrides someone who said stop. Every opt-in is in the consent
history (source ``import``, the file name as detail).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import ColumnElement, Table, and_, text, update

from crm.db import utcnow
from crm.extensions import db
from crm.leads.import_rows import Batch, Reasons
from crm.leads.imports import ImportStatus
from crm.leads.models import (
    ConsentSource,
    LeadImport,
    LeadSource,
)


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


@dataclass(frozen=True)
class Counts:
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: int = 0


def owned_by(job: Job) -> ColumnElement[bool]:
    """The import's row as this run left it: still running, its checkpoint where the run put it.
    Every write of a run is conditioned on it, so a run that lost the import changes nothing."""
    return and_(
        LeadImport.id == job.id,
        LeadImport.status == ImportStatus.RUNNING,
        LeadImport.processed_rows == job.processed_rows,
    )


def merge_batch(job: Job, batch: Batch) -> bool:
    """Merge ``batch`` and move the checkpoint past it, in one transaction. False when this run
    no longer owns the import (another worker took it over, or it was finished): nothing is
    merged then."""
    now = utcnow()
    imports = cast(Table, LeadImport.__table__)
    owned = db.session.execute(update(imports).where(owned_by(job)).values(heartbeat_at=now))
    if owned.rowcount != 1:  # type: ignore[attr-defined]
        db.session.rollback()
        return False
    if db.session.get_bind().dialect.name == "postgresql":
        merged = _merge_postgresql(job, batch, now)
    else:
        from crm.leads.import_sqlite import merge_sqlite

        merged = merge_sqlite(job, batch, now)
    counts = _counts(job, batch, merged)
    db.session.execute(
        update(imports)
        .where(imports.c.id == job.id)
        .values(
            processed_rows=imports.c.processed_rows + batch.rows,
            created=imports.c.created + counts.created,
            updated=imports.c.updated + counts.updated,
            skipped=imports.c.skipped + counts.skipped,
            errors_count=imports.c.errors_count + counts.errors,
            heartbeat_at=now,
        )
    )
    db.session.commit()
    job.processed_rows += batch.rows
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
    refused: int = 0  # existing leads an update would have overfilled (among ``errors``)


def _counts(job: Job, batch: Batch, merged: Merged) -> Counts:
    """The import's counters for a batch: each row is created, updated, skipped or an error."""
    created, created_rows, matched_rows = merged.created, merged.created_rows, merged.matched_rows
    errors, total = merged.errors, batch.occurrences - merged.refused
    if job.update:
        updated = matched_rows + (created_rows - created)
        return Counts(created, updated, total - matched_rows - created_rows, errors)
    return Counts(created, 0, total - created, errors)


# --- PostgreSQL ---------------------------------------------------------------------------------

_STAGE = """
CREATE TEMPORARY TABLE import_rows (
    line integer, phone text, name text, email text, tag_names text[], tag_keys text[],
    fields jsonb, occurrences integer
) ON COMMIT DROP;
CREATE TEMPORARY TABLE import_bad (line integer, reason text, raw text) ON COMMIT DROP
"""

# An update that would leave a lead with more custom fields or tags than a lead may have: the row
# leaves the batch and becomes a bad row (its lead unchanged).
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
    RETURNING s.line, a.fields > :max_fields AS fields_over
), bad AS (
    INSERT INTO import_bad (line, reason, raw)
    SELECT line, CASE WHEN fields_over THEN :too_many_fields ELSE :too_many_tags END, '' FROM over
)
SELECT count(*) FROM over
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
    ON CONFLICT (lead_id, key) DO NOTHING
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


def _merge_postgresql(job: Job, batch: Batch, now: datetime) -> Merged:
    if batch.lead_count + batch.error_count and not (batch.copy_leads or batch.copy_errors):
        render_copy(batch)
    connection = db.session.connection()
    # The staging tables have no statistics, and the guesses make the planner compile the merge
    # with JIT: ~20 ms per statement for a plan that runs in a second anyway.
    connection.exec_driver_sql("SET LOCAL jit = off")
    connection.exec_driver_sql(_STAGE)
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        if batch.copy_leads:
            with cursor.copy(
                "COPY import_rows (line, phone, name, email, tag_names, tag_keys, fields, occurrences) "
                "FROM STDIN"
            ) as copy:
                copy.write(batch.copy_leads)
        if batch.copy_errors:
            with cursor.copy("COPY import_bad (line, reason, raw) FROM STDIN") as copy:
                copy.write(batch.copy_errors)
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
    if job.update and batch.lead_count:
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
    if batch.lead_count:
        created, created_rows = db.session.execute(text(_INSERT_NEW), params).one()
    errors = 0
    if batch.error_count or refused:
        errors = db.session.execute(text(_INSERT_ERRORS), params).rowcount  # type: ignore[attr-defined]
    return Merged(created, created_rows, matched_rows, errors, refused)


# COPY's text format: tab-separated, \N for NULL, backslash escapes.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str | None) -> str:
    return "\\N" if value is None else value.translate(_COPY_ESCAPES)


def _copy_array(items: list[str]) -> str:
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return _copy_text("{" + ",".join(quoted) + "}")


def render_copy(batch: Batch) -> Batch:
    """The batch's rows as COPY text, and its objects let go. Run on the reading thread, so the
    thread that talks to PostgreSQL only sends bytes (it would otherwise wait for the GIL)."""
    lines = []
    for lead in batch.leads.values():
        if lead.tags:
            names = _copy_array([name for name, _key in lead.tags])
            keys = _copy_array([key for _name, key in lead.tags])
        else:
            names = keys = "\\N"
        fields = _copy_text(json.dumps(lead.fields, ensure_ascii=False)) if lead.fields else "\\N"
        lines.append(
            f"{lead.line}\t{_copy_text(lead.phone)}\t{_copy_text(lead.name)}\t{_copy_text(lead.email)}\t"
            f"{names}\t{keys}\t{fields}\t{lead.occurrences}\n"
        )
    batch.copy_leads = "".join(lines).encode()
    batch.copy_errors = "".join(
        f"{bad.line}\t{_copy_text(bad.reason)}\t{_copy_text(bad.raw)}\n" for bad in batch.errors
    ).encode()
    batch.leads, batch.errors = {}, []
    return batch
