"""CSV import pages: upload, column mapping, live progress and the report."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from flask import g, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from crm.auth.decorators import manager_required
from crm.errors import DomainError, ValidationFailed
from crm.htmx import render
from crm.leads import bp, csvfile
from crm.leads import imports as service
from crm.leads.csvfile import MB, too_large
from crm.leads.export import csv_download
from crm.leads.imports import ImportOptions, ImportStatus


def upload_request_max() -> int:
    return csvfile.MAX_BYTES + MB  # the file plus the form's other fields and the multipart framing


def allow_large_upload() -> None:
    """Imports take larger files than the app's MAX_CONTENT_LENGTH (sized for media): raise the
    limit for this request only, before anything reads the body."""
    request.max_content_length = upload_request_max()


def uploaded_csv() -> FileStorage:
    """The request's ``file``, or the error that says why there is none (too large included)."""
    if request.content_length is not None and request.content_length > upload_request_max():
        raise too_large()
    try:
        upload = request.files.get("file")
    except RequestEntityTooLarge:
        raise too_large() from None
    if upload is None or not upload.filename:
        raise ValidationFailed(_("Choose a CSV file to import."), code="invalid_file")
    return upload


@bp.url_value_preprocessor
def _before_the_body_is_read(endpoint: str | None, _values: dict[str, Any] | None) -> None:
    # URL preprocessors run before every before_request function, the CSRF check (which reads the
    # form) included: the only place early enough to widen the limit for one route, and to refuse
    # a file too large with the import's own limit in the message.
    if endpoint == "leads.upload_import":
        allow_large_upload()
        if request.content_length is not None and request.content_length > upload_request_max():
            raise too_large()


def _list_page(error: DomainError | None = None) -> Any:
    page = render_template(
        "leads/imports.html",
        imports=service.list_imports(g.workspace_id),
        error=error.message if error else None,
        max_mb=csvfile.MAX_BYTES // MB,
        max_rows=csvfile.MAX_ROWS,
    )
    return page, error.status if error else 200


@bp.get("/imports")
@manager_required
def imports() -> Any:
    return _list_page()


@bp.post("/imports")
@manager_required
def upload_import() -> Any:
    try:
        upload = uploaded_csv()
        lead_import = service.create_import(
            g.workspace_id,
            current_user.id,
            upload.stream,
            upload.filename or "",
            ImportOptions(),
            start=False,
            locale=str(get_locale() or ""),
        )
    except DomainError as exc:
        return _list_page(exc)
    return redirect(url_for("leads.import_mapping", import_id=lead_import.id), code=303)


@dataclass(frozen=True)
class _Form:
    """What the mapping form shows: the draft's choices, or after an error what was sent."""

    columns: list[str]  # what each column is set to
    fields: list[str]  # each column's custom field name
    on_duplicate: str
    tags: str
    country: str
    opt_in: bool

    @classmethod
    def of(cls, lead_import: Any) -> _Form:
        header = [cell or "" for cell in lead_import.header or []]
        return cls(
            _column_choices(lead_import.mapping or {}, len(header)),
            header,
            lead_import.on_duplicate or "skip",
            ", ".join(lead_import.tags or []),
            lead_import.default_country or "",
            bool(lead_import.opt_in),
        )

    @classmethod
    def sent(cls, width: int) -> _Form:
        form = request.form
        return cls(
            [form.get(f"column-{index}", "ignore") for index in range(width)],
            [form.get(f"field-{index}", "") for index in range(width)],
            form.get("on_duplicate", "skip"),
            form.get("tags", ""),
            form.get("default_country", ""),
            form.get("opt_in") == "y",
        )


def _mapping_page(
    lead_import: Any, form: _Form | None = None, error: str | None = None, status: int = 200
) -> Any:
    return render_template(
        "leads/import_mapping.html", imp=lead_import, form=form or _Form.of(lead_import), error=error
    ), status


def _column_choices(mapping: dict[str, Any], width: int) -> list[str]:
    """What each column is set to on the form, from a stored mapping."""
    choices = ["ignore"] * width
    for name in csvfile.FIELDS:
        index = mapping.get(name)
        if isinstance(index, int) and index < width:
            choices[index] = name
    for index in (mapping.get("custom") or {}).values():
        if isinstance(index, int) and index < width:
            choices[index] = "custom"
    return choices


def _labels() -> dict[str, str]:
    return {"phone": _("phone"), "name": _("name"), "email": _("email"), "tags": _("tags")}


def _mapping_of(form: _Form) -> dict[str, Any]:
    mapping: dict[str, Any] = {"phone": None, "name": None, "email": None, "tags": None, "custom": {}}
    for index, (choice, field_name) in enumerate(zip(form.columns, form.fields, strict=True)):
        if choice in csvfile.FIELDS:
            if mapping[choice] is not None:
                message = _("Only one column can hold the %(what)s.", what=_labels()[choice])
                raise ValidationFailed(message, code="invalid_mapping")
            mapping[choice] = index
        elif choice == "custom":
            name = " ".join(field_name.split())
            if name.casefold() in {taken.casefold() for taken in mapping["custom"]}:
                raise ValidationFailed(
                    _("Two columns go to the same custom field: %(name)s.", name=name), code="invalid_mapping"
                )
            mapping["custom"][name] = index
    return mapping


@bp.route("/imports/<int:import_id>/mapping", methods=["GET", "POST"])
@manager_required
def import_mapping(import_id: int) -> Any:
    lead_import = service.get_import(g.workspace_id, import_id)
    if lead_import.status != ImportStatus.DRAFT:
        return redirect(url_for("leads.import_progress", import_id=import_id))
    if request.method == "GET":
        return _mapping_page(lead_import)
    sent = _Form.sent(len(lead_import.header or []))
    options = ImportOptions(
        on_duplicate=sent.on_duplicate,
        tags=sent.tags.split(","),
        opt_in=sent.opt_in,
        default_country=sent.country or None,
    )
    try:
        mapping = _mapping_of(sent)
        service.start_import(g.workspace_id, import_id, mapping, options, locale=str(get_locale() or ""))
    except DomainError as exc:  # the page again, as it was sent: nothing chosen is lost
        return _mapping_page(lead_import, sent, exc.message, exc.status)
    return redirect(url_for("leads.import_progress", import_id=import_id), code=303)


@bp.post("/imports/<int:import_id>/discard")
@manager_required
def discard_import(import_id: int) -> Response:
    service.discard_import(g.workspace_id, import_id)
    return redirect(url_for("leads.imports"), code=303)


@bp.get("/imports/<int:import_id>")
@manager_required
def import_progress(import_id: int) -> Any:
    """The import's progress while it runs (the fragment polls itself), then its report."""
    lead_import = service.get_import(g.workspace_id, import_id)
    if lead_import.status == ImportStatus.DRAFT:
        return redirect(url_for("leads.import_mapping", import_id=import_id))
    active = lead_import.status in ImportStatus.ACTIVE
    errors = [] if active else service.first_errors(g.workspace_id, import_id)
    return render("leads/import.html", "leads/_import_progress.html", imp=lead_import, errors=errors)


@bp.get("/imports/<int:import_id>/errors.csv")
@manager_required
def import_errors_csv(import_id: int) -> Response:
    service.get_import(g.workspace_id, import_id)
    rows = functools.partial(service.bad_rows_csv, g.workspace_id, import_id)
    return csv_download(rows, f"import-{import_id}-errors.csv")
