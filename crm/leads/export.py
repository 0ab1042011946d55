"""CSV export of a filter of leads, streamed in batches so a million leads never sit in memory.

UTF-8 with a BOM (spreadsheets then read accents right). A cell that a spreadsheet would run as
a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or CR) is prefixed with ``'``; the
phone column is exempt: its values are validated E.164, whose ``+`` must stay.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence

from flask import Response, current_app
from sqlalchemy import select

from crm.extensions import db
from crm.leads.models import Lead, LeadTag
from crm.leads.search import LeadFilter, filtered_leads

HEADER = ("phone", "name", "email", "opt_in", "tags")
BATCH = 5000
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralised(cell: str) -> str:
    """A cell a spreadsheet shows as text, never runs."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def export_rows(workspace_id: int, filters: LeadFilter) -> Iterator[tuple[str, ...]]:
    """The header, then one row per lead in id order, read in keyset batches. Each batch is read
    in a short transaction of its own: none stays open while a slow client downloads."""
    yield HEADER
    last_id = 0
    base = (
        filtered_leads(workspace_id, filters)
        .with_only_columns(Lead.id, Lead.phone, Lead.name, Lead.email, Lead.opt_in)
        .order_by(Lead.id)
        .limit(BATCH)
    )
    while True:
        leads = db.session.execute(base.where(Lead.id > last_id)).all()
        tags: dict[int, list[str]] = {}
        if leads:
            for lead_id, name in db.session.execute(
                select(LeadTag.lead_id, LeadTag.name)
                .where(LeadTag.lead_id.in_([lead.id for lead in leads]))
                .order_by(LeadTag.lead_id, LeadTag.name)
            ):
                tags.setdefault(lead_id, []).append(name)
        db.session.rollback()
        for lead in leads:
            yield (
                lead.phone or "",
                neutralised(lead.name),
                neutralised(lead.email or ""),
                "true" if lead.opt_in else "false",
                neutralised(",".join(tags.get(lead.id, []))),
            )
        if len(leads) < BATCH:
            return
        last_id = leads[-1].id


def export_csv(workspace_id: int, filters: LeadFilter) -> Iterator[bytes]:
    """The CSV as chunks of bytes, BOM first."""
    return csv_chunks(export_rows(workspace_id, filters))


def csv_chunks(rows: Iterable[Sequence[str]]) -> Iterator[bytes]:
    """Rows as CSV in chunks of bytes, a UTF-8 BOM first (spreadsheets then read accents right)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    yield "\ufeff".encode()
    for count, row in enumerate(rows, start=1):
        writer.writerow(row)
        if count % 1000 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def csv_download(make_chunks: Callable[[], Iterator[bytes]], filename: str) -> Response:
    """A streamed CSV attachment. The chunks are made in an app context of their own (the request's
    is gone by the time the server writes the body), whose database session ends with the stream."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def body() -> Iterator[bytes]:
        with app.app_context():
            try:
                yield from make_chunks()
            finally:
                db.session.remove()

    return Response(
        body(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )
