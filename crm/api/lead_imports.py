"""REST API v1: CSV imports of leads (see CONTRACT.md)."""

from __future__ import annotations

import functools
from typing import Any

from flask import g, request
from flask_babel import get_locale
from flask_babel import gettext as _

from crm.api import bp
from crm.errors import ValidationFailed
from crm.leads import imports
from crm.leads.export import csv_download
from crm.leads.import_views import allow_large_upload, uploaded_csv
from crm.params import parse_bool


def _opt_in() -> bool:
    value = parse_bool((request.form.get("opt_in") or "false").strip())
    if value is not None:
        return value
    raise ValidationFailed(_("opt_in must be true or false."), code="invalid_parameter")


@bp.post("/leads/imports")
def create_lead_import() -> Any:
    """Multipart: ``file``, and optional ``on_duplicate``, ``tags``, ``opt_in``, ``default_country``.
    Queued at once, with the columns found by header."""
    allow_large_upload()
    upload = uploaded_csv()
    options = imports.ImportOptions(
        on_duplicate=(request.form.get("on_duplicate") or "skip").strip(),
        tags=(request.form.get("tags") or "").split(","),
        opt_in=_opt_in(),
        default_country=request.form.get("default_country") or None,
    )
    lead_import = imports.create_import(
        g.workspace_id,
        g.api_token.user_id,
        upload.stream,
        upload.filename or "",
        options,
        start=True,
        locale=str(get_locale() or ""),  # the request's Accept-Language
    )
    return {"id": lead_import.id, "status": "queued"}, 202


@bp.get("/leads/imports/<int:import_id>")
def lead_import_detail(import_id: int) -> Any:
    lead_import = imports.get_import(g.workspace_id, import_id)
    return imports.import_json(lead_import, imports.first_errors(g.workspace_id, import_id))


@bp.get("/leads/imports/<int:import_id>/errors.csv")
def lead_import_errors(import_id: int) -> Any:
    """Every bad row, as CSV: line, reason, then the row's cells under the file's header."""
    imports.get_import(g.workspace_id, import_id)
    rows = functools.partial(imports.bad_rows_csv, g.workspace_id, import_id)
    return csv_download(rows, f"import-{import_id}-errors.csv")
