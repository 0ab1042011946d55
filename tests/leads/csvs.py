"""CSV files for the import tests, written as spreadsheets and other CRMs write them."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from flask.testing import FlaskClient

from crm.extensions import db
from crm.leads import imports
from crm.leads.imports import ImportOptions
from crm.leads.models import Lead, LeadImport
from tests import factories

HEADER = ("phone", "name", "email", "tags")


def csv_text(
    rows: Sequence[Sequence[Any]],
    header: Sequence[str] | None = HEADER,
    delimiter: str = ",",
    newline: str = "\r\n",
) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline)
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def csv_bytes(
    rows: Sequence[Sequence[Any]],
    header: Sequence[str] | None = HEADER,
    *,
    delimiter: str = ",",
    encoding: str = "utf-8",
    newline: str = "\r\n",
) -> bytes:
    """A CSV file; ``encoding="utf-8-sig"`` writes the BOM Excel puts in UTF-8 files."""
    return csv_text(rows, header, delimiter, newline).encode(encoding)


def br_mobile(n: int) -> str:
    """The n-th distinct Brazilian mobile number, as people write it: (11) 9xxxx-xxxx."""
    digits = f"{n:08d}"
    return f"({11 + n % 80}) 9{digits[:4]}-{digits[4:]}"


def br_e164(n: int) -> str:
    return f"+55{11 + n % 80}9{n:08d}"


def with_bad_rows(count: int, every: int = 20) -> tuple[list[tuple[str, ...]], set[int]]:
    """``count`` rows where every ``every``-th is bad in turn: no phone, a phone too short, a
    bad email; and the lines (header = 1) of the bad ones."""
    rows: list[tuple[str, ...]] = []
    bad: set[int] = set()
    for n in range(count):
        line = n + 2
        if n % every == every - 1:
            kind = (n // every) % 3
            rows.append(("", f"Sem Fone {n}", "", "") if kind == 0 else ("12345", f"Curto {n}", "", ""))
            if kind == 2:
                rows[-1] = (br_mobile(n), f"Email {n}", "not-an-email", "")
            bad.add(line)
        else:
            rows.append((br_mobile(n), f"Cliente {n}", f"cliente{n}@example.com", ""))
    return rows, bad


def import_file(
    p: factories.Person,
    data: bytes,
    filename: str = "leads.csv",
    *,
    start: bool = True,
    **options: Any,
) -> LeadImport:
    """Upload ``data`` through the service; with ``start`` it runs at once (the test queue is
    immediate). The import as it ended."""
    lead_import = imports.create_import(
        p.workspace_id, p.user_id, io.BytesIO(data), filename, ImportOptions(**options), start=start
    )
    db.session.expire_all()
    found = db.session.get(LeadImport, lead_import.id)
    assert found is not None
    return found


def upload(
    client: FlaskClient, headers: dict[str, str], data: bytes, filename: str = "leads.csv", **form: str
) -> Any:
    """``POST /api/v1/leads/imports`` as multipart, the way curl -F sends it."""
    return client.post(
        "/api/v1/leads/imports",
        data={"file": (io.BytesIO(data), filename, "text/csv"), **form},
        headers=headers,
        content_type="multipart/form-data",
    )


def stored_imports() -> set[str]:
    """The import files in the media storage (the test session's storage outlives each test's rows)."""
    from crm.media.storage import get_storage

    return {key for key, _when in get_storage().stored_keys() if key.startswith("imports/")}


def leads_by_phone(workspace_id: int) -> dict[str, Lead]:
    db.session.expire_all()
    return {
        lead.phone: lead
        for lead in db.session.scalars(db.select(Lead).where(Lead.workspace_id == workspace_id))
        if lead.phone
    }
