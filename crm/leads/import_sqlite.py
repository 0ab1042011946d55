"""Merging one batch of an import on SQLite (the embedded database): ``crm.leads.import_merge``'s
rules with ``executemany``.

Everything runs in the batch's write transaction, which the lease's UPDATE opened: SQLite has
one writer at a time, so no lead can appear between reading which phones exist and inserting
the new ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Table, bindparam, select, update

from crm.db import insert_ignoring_conflicts
from crm.extensions import db
from crm.leads.import_merge import Job, Merged
from crm.leads.import_rows import Batch, StagedLead
from crm.leads.models import ConsentEvent, ConsentSource, Lead, LeadImportError, LeadSource, LeadTag
from crm.leads.services import MAX_FIELDS, MAX_TAGS_PER_LEAD

IN_CHUNK = 500  # phones per IN (...)
T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _existing(workspace_id: int, phones: Sequence[str]) -> dict[str, Any]:
    leads = cast(Table, Lead.__table__)
    found: dict[str, Any] = {}
    for chunk in _chunks(phones):
        for row in db.session.execute(
            select(
                leads.c.id,
                leads.c.phone,
                leads.c.kind,
                leads.c.opt_in,
                leads.c.opted_out_at,
                leads.c.opted_in_at,
                leads.c.name,
                leads.c.email,
                leads.c.custom_fields,
            ).where(leads.c.workspace_id == workspace_id, leads.c.phone.in_(chunk))
        ):
            found[row.phone] = row
    return found


def merge_sqlite(job: Job, batch: Batch, now: datetime) -> Merged:
    leads = cast(Table, Lead.__table__)
    existing = _existing(job.workspace_id, list(batch.leads))
    tags: list[dict[str, Any]] = []
    consents: list[int] = []
    refused: list[tuple[int, str]] = []  # (line, reason): updates that would overfill their lead
    matched_rows = 0
    if job.update:
        changes: list[dict[str, Any]] = []
        tag_keys = _tag_keys([row.id for phone, row in existing.items() if batch.leads[phone].tags])
        for phone, row in existing.items():
            lead = batch.leads[phone]
            if row.kind != "person":
                continue
            fields = {**(row.custom_fields or {}), **lead.fields} if lead.fields else row.custom_fields
            # Refused only when the row adds to them, as on PostgreSQL.
            if lead.fields and len(fields or {}) > MAX_FIELDS:
                refused.extend((line, job.reasons.too_many_fields) for line in lead.lines())
                continue
            new_tags = {key for _name, key in lead.tags}
            if new_tags and len(tag_keys.get(row.id, set()) | new_tags) > MAX_TAGS_PER_LEAD:
                refused.extend((line, job.reasons.too_many_tags) for line in lead.lines())
                continue
            opting_in = job.opt_in and not row.opt_in and row.opted_out_at is None
            changes.append(
                {
                    "lead_id": row.id,
                    "name": lead.name or row.name,
                    "email": lead.email or row.email,
                    "custom_fields": fields,
                    "opt_in": row.opt_in or opting_in,
                    "opted_in_at": now if opting_in else row.opted_in_at,
                }
            )
            tags.extend(_tag_rows(job, row.id, lead))
            if opting_in:
                consents.append(row.id)
            matched_rows += lead.occurrences
        if changes:
            db.session.execute(
                update(leads)
                .where(leads.c.id == bindparam("lead_id"))
                .values(
                    name=bindparam("name"),
                    email=bindparam("email"),
                    custom_fields=bindparam("custom_fields", type_=leads.c.custom_fields.type),
                    opt_in=bindparam("opt_in"),
                    opted_in_at=bindparam("opted_in_at", type_=leads.c.opted_in_at.type),
                    deleted_at=None,
                    updated_at=now,
                ),
                changes,
            )
    new = [lead for phone, lead in batch.leads.items() if phone not in existing]
    if new:
        db.session.execute(
            insert_ignoring_conflicts(leads),
            [
                {
                    "workspace_id": job.workspace_id,
                    "phone": lead.phone,
                    "name": lead.name,
                    "email": lead.email,
                    "notes": "",
                    "source": LeadSource.IMPORT.value,
                    "kind": "person",
                    "custom_fields": lead.fields,
                    "opt_in": job.opt_in,
                    "opted_in_at": now if job.opt_in else None,
                    "created_at": now,
                    "updated_at": now,
                }
                for lead in new
            ],
        )
    ids = {row.phone: row.id for row in _new_ids(job.workspace_id, [lead.phone for lead in new])}
    for lead in new:
        tags.extend(_tag_rows(job, ids[lead.phone], lead))
        if job.opt_in:
            consents.append(ids[lead.phone])
    _insert_many(LeadTag, tags)
    _insert_many(
        ConsentEvent,
        [
            {
                "workspace_id": job.workspace_id,
                "lead_id": lead_id,
                "opted_in": True,
                "source": ConsentSource.IMPORT.value,
                "user_id": job.user_id,
                "detail": job.detail[:200],
                "created_at": now,
            }
            for lead_id in consents
        ],
    )
    errors = _insert_many(
        LeadImportError,
        [
            {
                "workspace_id": job.workspace_id,
                "import_id": job.id,
                "line": bad.line,
                "reason": bad.reason,
                "raw": bad.raw,
            }
            for bad in batch.errors
        ]
        + [
            {"workspace_id": job.workspace_id, "import_id": job.id, "line": line, "reason": reason, "raw": ""}
            for line, reason in refused
        ],
    )
    created_rows = sum(lead.occurrences for lead in new)
    return Merged(len(new), created_rows, matched_rows, errors, len(refused))


def _tag_keys(lead_ids: Sequence[int]) -> dict[int, set[str]]:
    """The tags the leads already have (their keys), by lead."""
    tags = cast(Table, LeadTag.__table__)
    found: dict[int, set[str]] = {}
    for chunk in _chunks(lead_ids):
        for lead_id, key in db.session.execute(
            select(tags.c.lead_id, tags.c.key).where(tags.c.lead_id.in_(chunk))
        ):
            found.setdefault(lead_id, set()).add(key)
    return found


def _new_ids(workspace_id: int, phones: Sequence[str]) -> list[Any]:
    leads = cast(Table, Lead.__table__)
    rows: list[Any] = []
    for chunk in _chunks(phones):
        rows.extend(
            db.session.execute(
                select(leads.c.id, leads.c.phone).where(
                    leads.c.workspace_id == workspace_id, leads.c.phone.in_(chunk)
                )
            )
        )
    return rows


def _tag_rows(job: Job, lead_id: int, lead: StagedLead) -> list[dict[str, Any]]:
    return [{"workspace_id": job.workspace_id, "lead_id": lead_id, "name": n, "key": k} for n, k in lead.tags]


def _insert_many(model: type[Any], rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    result = db.session.execute(insert_ignoring_conflicts(model.__table__), rows)
    count: int = result.rowcount  # type: ignore[attr-defined]
    return count if count >= 0 else len(rows)
