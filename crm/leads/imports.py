"""CSV imports of leads: upload, column mapping, and the report.

An upload is checked whole (see ``crm.leads.csvfile``) and stored in the media storage under
``imports/w<workspace>/<random>.csv``, so a worker on another machine reads the same file. From
the browser it stays a ``draft`` until someone confirms which column holds what; the API starts
it at once with the columns found by header. The run itself, as a task: ``crm.leads.import_run``.
"""

from __future__ import annotations

import csv
import io
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import phonenumbers
from flask_babel import gettext as _
from sqlalchemy import select

from crm.db import utcnow
from crm.errors import ValidationFailed
from crm.extensions import db
from crm.leads import csvfile
from crm.leads.export import neutralised
from crm.leads.models import LeadImport, LeadImportError
from crm.leads.services import MAX_FIELD_NAME, MAX_FIELDS, clean_tags, workspace_country
from crm.media.services import clean_filename
from crm.media.storage import get_storage
from crm.tenancy import get_scoped, scoped
from crm.textcheck import check_clean_text

REPORTED_ERRORS = 100
ON_DUPLICATE = ("skip", "update")


class ImportStatus:
    DRAFT = "draft"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    ACTIVE = (QUEUED, RUNNING)


class NoPhoneColumn(ValidationFailed):
    code = "no_phone_column"

    def default_message(self) -> str:
        return _("No column of the file holds phone numbers: name one phone, telefone, celular or whatsapp.")


@dataclass(frozen=True)
class ImportOptions:
    """What the person importing chose; ``default_country`` None means the workspace's."""

    on_duplicate: str = "skip"
    tags: list[str] = field(default_factory=list)
    opt_in: bool = False
    default_country: str | None = None


# --- upload and start ---------------------------------------------------------------------------


def create_import(
    workspace_id: int,
    user_id: int | None,
    source: IO[bytes],
    filename: str,
    options: ImportOptions,
    *,
    start: bool,
    locale: str | None = None,
) -> LeadImport:
    """Check and store an uploaded CSV. With ``start`` (the API) the columns are the ones found
    by header and the import is queued at once (a file without a phone column is refused);
    otherwise it is a draft waiting for its column mapping. Bad files and options raise before
    anything is stored. ``locale`` is the uploader's language, the report's."""
    country = _country(workspace_id, options.default_country)
    tags = clean_tags(options.tags)
    on_duplicate = _on_duplicate(options.on_duplicate)
    db.session.commit()  # no transaction stays open while the file is read, checked and stored
    with tempfile.TemporaryDirectory(prefix="zapdesk-import-") as folder:
        path = Path(folder) / "upload.csv"
        with path.open("wb") as out:
            size, encoding = csvfile.spool(source, out)
        found = csvfile.inspect(path, size, encoding)
        mapping = csvfile.guess_mapping(found.header)
        if start and mapping["phone"] is None:
            raise NoPhoneColumn()
        key = f"imports/w{workspace_id}/{secrets.token_hex(16)}.csv"
        with path.open("rb") as stored:
            get_storage().save(key, stored, "text/csv")
    now = utcnow()
    lead_import = LeadImport(
        workspace_id=workspace_id,
        user_id=user_id,
        status=ImportStatus.QUEUED if start else ImportStatus.DRAFT,
        filename=clean_filename(filename or "leads.csv")[:255],
        storage_key=key,
        size=found.size,
        encoding=found.encoding,
        delimiter=found.delimiter,
        mapping=mapping,
        header=found.header,
        preview=found.preview,
        on_duplicate=on_duplicate,
        tags=tags,
        opt_in=options.opt_in,
        default_country=country,
        total_rows=found.rows,
        locale=locale,
        created_at=now,
        heartbeat_at=now if start else None,
    )
    db.session.add(lead_import)
    try:
        if start:
            _enqueue_after_commit(workspace_id, lead_import)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        get_storage().delete(key)
        raise
    return lead_import


def start_import(
    workspace_id: int,
    import_id: int,
    mapping: dict[str, Any],
    options: ImportOptions,
    *,
    locale: str | None = None,
) -> LeadImport:
    """Confirm a draft's columns and options and queue it. ``mapping`` is checked against the
    file's header: one phone column, each column used once, custom fields with valid names."""
    lead_import = get_import(workspace_id, import_id)
    if lead_import.status != ImportStatus.DRAFT:
        raise ValidationFailed(_("This import has already started."), code="invalid_state")
    clean = check_mapping(mapping, len(lead_import.header or []))
    # Everything is checked before the draft changes: a refused start leaves it as it was.
    country, tags = _country(workspace_id, options.default_country), clean_tags(options.tags)
    on_duplicate = _on_duplicate(options.on_duplicate)
    lead_import.default_country, lead_import.tags, lead_import.on_duplicate = country, tags, on_duplicate
    lead_import.opt_in = options.opt_in
    lead_import.mapping = clean
    lead_import.locale = locale or lead_import.locale
    lead_import.status = ImportStatus.QUEUED
    lead_import.heartbeat_at = utcnow()
    _enqueue_after_commit(workspace_id, lead_import)
    db.session.commit()
    return lead_import


def discard_import(workspace_id: int, import_id: int) -> None:
    """Forget a draft and its file (an import that started keeps its report)."""
    lead_import = get_import(workspace_id, import_id)
    if lead_import.status != ImportStatus.DRAFT:
        raise ValidationFailed(_("This import has already started."), code="invalid_state")
    key = lead_import.storage_key
    db.session.delete(lead_import)
    db.session.commit()
    if key:
        get_storage().delete(key)


def check_mapping(mapping: dict[str, Any], width: int) -> dict[str, Any]:
    """A column mapping as stored: indexes within the header, one phone, no column twice."""
    used: set[int] = set()

    def column(value: Any) -> int | None:
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < width:
            raise ValidationFailed(_("Pick columns of the file."), code="invalid_mapping")
        if value in used:
            raise ValidationFailed(_("A column can be used for one thing only."), code="invalid_mapping")
        used.add(value)
        return value

    clean: dict[str, Any] = {name: column(mapping.get(name)) for name in csvfile.FIELDS}
    if clean["phone"] is None:
        raise NoPhoneColumn(_("Choose the column that holds the phone numbers."))
    custom: dict[str, int] = {}
    for raw_name, index in (mapping.get("custom") or {}).items():
        name = " ".join(check_clean_text(str(raw_name), code="invalid_mapping").split())
        if not name or len(name) > MAX_FIELD_NAME:
            raise ValidationFailed(
                _("A custom field needs a name of at most %(n)d characters.", n=MAX_FIELD_NAME),
                code="invalid_mapping",
            )
        if name.casefold() in {taken.casefold() for taken in custom}:  # as the lead's form sees them
            raise ValidationFailed(
                _("Two columns go to the same custom field: %(name)s.", name=name), code="invalid_mapping"
            )
        position = column(index)
        assert position is not None
        custom[name] = position
    if len(custom) > MAX_FIELDS:
        raise ValidationFailed(
            _("A lead can have at most %(n)d custom fields.", n=MAX_FIELDS), code="invalid_mapping"
        )
    clean["custom"] = custom
    return clean


def _country(workspace_id: int, raw: str | None) -> str:
    if raw is None or not raw.strip():
        return workspace_country(workspace_id)
    country = raw.strip().upper()
    if country not in phonenumbers.SUPPORTED_REGIONS:
        raise ValidationFailed(
            _("The country must be a two-letter code, such as BR or US."), code="invalid_country"
        )
    return country


def _on_duplicate(raw: str) -> str:
    if raw not in ON_DUPLICATE:
        raise ValidationFailed(_("on_duplicate must be skip or update."), code="invalid_on_duplicate")
    return raw


def _enqueue_after_commit(workspace_id: int, lead_import: LeadImport) -> None:
    from crm.leads.tasks import import_leads_task
    from crm.worker import enqueue_after_commit

    db.session.flush()  # the id
    enqueue_after_commit(import_leads_task, workspace_id, lead_import.id)


# --- reading --------------------------------------------------------------------------------------


def get_import(workspace_id: int, import_id: int) -> LeadImport:
    return get_scoped(LeadImport, workspace_id, import_id)


def list_imports(workspace_id: int, limit: int = 50) -> list[LeadImport]:
    return list(
        db.session.scalars(
            scoped(select(LeadImport), LeadImport, workspace_id).order_by(LeadImport.id.desc()).limit(limit)
        )
    )


def first_errors(workspace_id: int, import_id: int, limit: int = REPORTED_ERRORS) -> list[LeadImportError]:
    return list(
        db.session.scalars(
            select(LeadImportError)
            .where(LeadImportError.workspace_id == workspace_id, LeadImportError.import_id == import_id)
            .order_by(LeadImportError.line)
            .limit(limit)
        )
    )


def import_json(lead_import: LeadImport, errors: list[LeadImportError]) -> dict[str, Any]:
    from crm.leads.services import iso

    return {
        "id": lead_import.id,
        "status": lead_import.status,
        "filename": lead_import.filename,
        "total_rows": lead_import.total_rows,
        "processed_rows": lead_import.processed_rows,
        "created": lead_import.created,
        "updated": lead_import.updated,
        "skipped": lead_import.skipped,
        "errors_count": lead_import.errors_count,
        "errors": [{"line": error.line, "reason": error.reason} for error in errors],
        "failure": lead_import.failure,
        "created_at": iso(lead_import.created_at),
        "finished_at": iso(lead_import.finished_at),
    }


def bad_rows_csv(workspace_id: int, import_id: int) -> Iterator[bytes]:
    """Every bad row of an import as CSV (UTF-8 with BOM): its line, why, then its cells as they
    were, under the file's own header, so it can be fixed and imported again. Cells are
    neutralised for spreadsheets (see ``crm.leads.export``)."""
    lead_import = get_import(workspace_id, import_id)
    header = list(lead_import.header or [])
    delimiter = lead_import.delimiter
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["line", "reason", *(neutralised(cell) for cell in header)])
    yield ("\ufeff" + buffer.getvalue()).encode()
    last_line = 0
    while True:
        buffer.seek(0)
        buffer.truncate()
        rows = db.session.execute(
            select(LeadImportError.line, LeadImportError.reason, LeadImportError.raw)
            .where(
                LeadImportError.workspace_id == workspace_id,
                LeadImportError.import_id == import_id,
                LeadImportError.line > last_line,
            )
            .order_by(LeadImportError.line)
            .limit(5000)
        ).all()
        db.session.rollback()  # read: no transaction (nor snapshot) stays open while the client reads
        if not rows:
            return
        for line, reason, raw in rows:
            cells = csvfile.from_csv_line(raw, delimiter)
            writer.writerow([line, neutralised(reason), *(neutralised(cell) for cell in cells)])
        last_line = rows[-1].line
        yield buffer.getvalue().encode()
