"""CSV imports in the browser: upload, check the columns, watch the progress, read the report."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from crm.db import utcnow
from crm.extensions import db
from crm.leads.models import LeadImport
from crm.media.storage import get_storage
from tests import factories
from tests.conftest import csrf_from
from tests.leads.csvs import br_e164, br_mobile, csv_bytes, leads_by_phone

PAGE = "/leads/imports"
FILE = csv_bytes(
    [
        ("Ana Lima", br_mobile(1), "ana@example.com", "Acme", "vip"),
        ("Bia", "12", "", "", ""),
        ("Caio", br_mobile(3), "", "Beta", ""),
    ],
    ("Nome", "Telefone", "E-mail", "Empresa", "Tags"),
)


def send_file(client: FlaskClient, data: bytes, filename: str = "clientes.csv") -> Any:
    token = csrf_from(client, PAGE)
    return client.post(
        PAGE,
        data={"csrf_token": token, "file": (io.BytesIO(data), filename, "text/csv")},
        content_type="multipart/form-data",
    )


def selected(html: str, column: int) -> str:
    select = re.search(rf'<select id="column-{column}".*?</select>', html, re.S)
    assert select, f"no select for column {column}"
    found = re.search(r'<option value="(\w+)" selected', select.group(0))
    assert found
    return found.group(1)


def the_import() -> LeadImport:
    db.session.expire_all()
    lead_import = db.session.scalars(db.select(LeadImport).order_by(LeadImport.id.desc())).first()
    assert lead_import is not None
    return lead_import


def test_upload_check_the_columns_and_read_the_report(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    page = logged_in.get(PAGE).get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in page and "No imports yet." in page

    response = send_file(logged_in, FILE)
    assert response.status_code == 303
    draft = the_import()
    assert draft.status == "draft" and response.headers["Location"].endswith(
        f"/leads/imports/{draft.id}/mapping"
    )

    mapping_page = logged_in.get(response.headers["Location"]).get_data(as_text=True)
    assert "Ana Lima" in mapping_page and "Caio" in mapping_page  # the preview
    assert [selected(mapping_page, i) for i in range(5)] == ["name", "phone", "email", "ignore", "tags"]
    assert "clientes.csv" in mapping_page and "opt_in" in mapping_page

    form = {
        "csrf_token": csrf_from(logged_in, f"/leads/imports/{draft.id}/mapping"),
        "column-0": "name", "column-1": "phone", "column-2": "email", "column-3": "custom",
        "column-4": "tags", "field-3": "Empresa", "on_duplicate": "skip", "tags": "Feira, 2026",
        "opt_in": "y", "default_country": "br",
    }  # fmt: skip
    started = logged_in.post(f"/leads/imports/{draft.id}/mapping", data=form)
    assert started.status_code == 303 and started.headers["Location"].endswith(f"/leads/imports/{draft.id}")

    report = logged_in.get(f"/leads/imports/{draft.id}").get_data(as_text=True)
    assert 'id="import-' in report and "every 1s" not in report  # done: it stopped polling
    assert "Not a phone number: 12" in report and f"/leads/imports/{draft.id}/errors.csv" in report
    lead = leads_by_phone(owner.workspace_id)[br_e164(1)]
    assert (
        lead.opt_in
        and lead.custom_fields == {"Empresa": "Acme"}
        and set(lead.tag_names) == {"vip", "Feira", "2026"}
    )
    done = the_import()
    assert (done.status, done.created, done.errors_count, done.default_country) == ("done", 2, 1, "BR")

    errors = logged_in.get(f"/leads/imports/{draft.id}/errors.csv")
    table = list(csv.reader(io.StringIO(errors.get_data(as_text=True).lstrip("\ufeff"))))
    assert table == [
        ["line", "reason", "Nome", "Telefone", "E-mail", "Empresa", "Tags"],
        ["3", "Not a phone number: 12", "Bia", "12", "", "", ""],
    ]
    assert "clientes.csv" in logged_in.get(PAGE).get_data(as_text=True)  # among the past imports


def test_the_progress_polls_itself_while_the_import_runs(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    lead_import = db.session.get(LeadImport, factories.lead_import(owner))
    assert lead_import is not None
    lead_import.status, lead_import.processed_rows, lead_import.total_rows = "running", 250, 1000
    lead_import.heartbeat_at = utcnow()
    db.session.commit()
    fragment = logged_in.get(f"/leads/imports/{lead_import.id}", headers={"HX-Request": "true"})
    html = fragment.get_data(as_text=True)
    assert fragment.status_code == 200 and "<html" not in html
    assert html.lstrip().startswith(f'<section id="import-{lead_import.id}"')
    assert 'hx-trigger="every 1s"' in html and 'hx-swap="outerHTML"' in html
    assert 'value="250"' in html and 'max="1000"' in html and "250 of 1,000 rows" in html
    page = logged_in.get(f"/leads/imports/{lead_import.id}").get_data(as_text=True)
    assert "<html" in page and 'hx-trigger="every 1s"' in page

    lead_import.status, lead_import.processed_rows = "done", 1000
    db.session.commit()
    html = logged_in.get(f"/leads/imports/{lead_import.id}", headers={"HX-Request": "true"}).get_data(
        as_text=True
    )
    assert "hx-trigger" not in html and "New leads" in html


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty."),
        (b"\x00\x00\x00", "This is not a CSV file."),
        (b'phone\r\n"' + b"x" * 200_000, "Line 2 of the file can"),
    ],
)
def test_a_bad_file_is_an_error_on_the_page(logged_in: FlaskClient, data: bytes, message: str) -> None:
    response = send_file(logged_in, data)
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert db.session.scalar(db.select(db.func.count()).select_from(LeadImport)) == 0


def test_the_row_limit_is_written_in_the_readers_language(logged_in: FlaskClient) -> None:
    assert "Up to 1,000,000 rows" in logged_in.get(PAGE).get_data(as_text=True)
    portuguese = logged_in.get(PAGE, headers={"Accept-Language": "pt-BR"}).get_data(as_text=True)
    assert "1.000.000" in portuguese and "1,000,000" not in portuguese


def test_no_file_chosen(logged_in: FlaskClient) -> None:
    response = logged_in.post(PAGE, data={"csrf_token": csrf_from(logged_in, PAGE)})
    assert response.status_code == 422 and "Choose a CSV file to import." in response.get_data(as_text=True)


def test_files_larger_than_the_media_limit_are_taken(logged_in: FlaskClient, app: Flask) -> None:
    """The upload limit is raised for this route before the CSRF check reads the form."""
    saved = app.config["MAX_CONTENT_LENGTH"]
    token = csrf_from(logged_in, PAGE)
    app.config["MAX_CONTENT_LENGTH"] = 1000
    try:
        response = logged_in.post(
            PAGE,
            data={"csrf_token": token, "file": (io.BytesIO(FILE * 20), "big.csv", "text/csv")},
            content_type="multipart/form-data",
        )
    finally:
        app.config["MAX_CONTENT_LENGTH"] = saved
    assert response.status_code == 303


def test_a_file_over_the_import_limit_is_refused_with_that_limit(
    logged_in: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from werkzeug.datastructures import FileStorage
    from werkzeug.test import encode_multipart

    from crm.leads import csvfile

    monkeypatch.setattr(csvfile, "MAX_BYTES", 1024)
    # Past the limit plus the allowance for the form (1 MB): refused before the CSRF check reads it.
    boundary, body = encode_multipart(
        {"csrf_token": csrf_from(logged_in, PAGE), "file": FileStorage(io.BytesIO(FILE * 8000), "big.csv")}
    )
    response = logged_in.post(PAGE, data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert response.status_code == 413
    assert "The file is larger than 1 KB, the most an import takes." in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"column-0": "name"}, "Choose the column that holds the phone numbers."),
        ({"column-0": "phone", "column-1": "phone"}, "Only one column can hold the phone."),
        ({"column-1": "phone", "column-0": "custom", "column-3": "custom", "field-0": "X", "field-3": " X "},
         "Two columns go to the same custom field: X."),
        ({"column-1": "phone", "column-0": "custom", "column-3": "custom",
          "field-0": "Plano", "field-3": "plano"},
         "Two columns go to the same custom field: plano."),
        ({"column-1": "phone", "column-3": "custom", "field-3": ""}, "A custom field needs a name"),
    ],
)  # fmt: skip
def test_a_wrong_mapping_is_explained_and_nothing_starts(
    logged_in: FlaskClient, columns: dict[str, str], message: str
) -> None:
    send_file(logged_in, FILE)
    draft = the_import()
    form = {"csrf_token": csrf_from(logged_in, PAGE), "on_duplicate": "skip", **columns}
    response = logged_in.post(f"/leads/imports/{draft.id}/mapping", data=form)
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert the_import().status == "draft"


def test_after_an_error_the_page_keeps_every_choice_sent(logged_in: FlaskClient) -> None:
    send_file(logged_in, FILE)
    draft = the_import()
    form = {
        "csrf_token": csrf_from(logged_in, PAGE),
        "column-0": "name",
        "column-1": "phone",
        "column-3": "custom",
        "field-3": "Empresa atual",
        "on_duplicate": "update",
        "tags": "feira 2026, sp",
        "opt_in": "y",
        "default_country": "XX",
    }
    response = logged_in.post(f"/leads/imports/{draft.id}/mapping", data=form)
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "The country must be a two-letter code, such as BR or US." in html  # not a field's name
    assert [selected(html, column) for column in range(5)] == ["name", "phone", "ignore", "custom", "ignore"]
    assert 'name="field-3" value="Empresa atual"' in html
    assert re.search(r'name="on_duplicate" value="update"\s+checked', html)
    assert 'name="tags" value="feira 2026, sp"' in html and 'name="default_country" value="XX"' in html
    assert re.search(r'name="opt_in" value="y"\s+checked', html)
    assert the_import().status == "draft"


def test_a_draft_can_be_discarded(logged_in: FlaskClient) -> None:
    send_file(logged_in, FILE)
    draft = the_import()
    key, draft_id = draft.storage_key, draft.id
    response = logged_in.post(
        f"/leads/imports/{draft_id}/discard", data={"csrf_token": csrf_from(logged_in, PAGE)}
    )
    assert response.status_code == 303
    db.session.expunge_all()
    assert db.session.get(LeadImport, draft_id) is None
    assert key is not None and not get_storage().exists(key)


def test_a_started_import_has_no_mapping_page(logged_in: FlaskClient, owner: factories.Person) -> None:
    send_file(logged_in, FILE)
    draft = the_import()
    assert logged_in.get(f"/leads/imports/{draft.id}").headers["Location"].endswith("/mapping")
    draft.status = "done"
    db.session.commit()
    response = logged_in.get(f"/leads/imports/{draft.id}/mapping")
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/leads/imports/{draft.id}")
    assert (
        logged_in.post(
            f"/leads/imports/{draft.id}/discard", data={"csrf_token": csrf_from(logged_in, PAGE)}
        ).status_code
        == 422
    )


def test_another_workspaces_import_is_404_in_the_browser(logged_in: FlaskClient) -> None:
    other = factories.person("Outra", "outra@example.com", role="owner")
    theirs = factories.lead_import(other)
    for path in (
        f"/leads/imports/{theirs}",
        f"/leads/imports/{theirs}/mapping",
        f"/leads/imports/{theirs}/errors.csv",
    ):
        assert logged_in.get(path).status_code == 404
    token = csrf_from(logged_in, PAGE)
    assert (
        logged_in.post(
            f"/leads/imports/{theirs}/mapping", data={"csrf_token": token, "column-0": "phone"}
        ).status_code
        == 404
    )
    assert "Maria" not in logged_in.get(PAGE).get_data(as_text=True)


def test_signed_out_visitors_go_to_login(client: FlaskClient) -> None:
    assert client.get(PAGE).status_code == 302


def test_imports_are_for_owners_and_admins(agent: FlaskClient) -> None:
    """An import can add or opt in thousands of people at once: like export, it is a manager's."""
    assert agent.get(PAGE).status_code == 403
    token = csrf_from(agent, "/leads/")
    response = agent.post(
        PAGE,
        data={"csrf_token": token, "file": (io.BytesIO(FILE), "clientes.csv", "text/csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 403
    assert db.session.scalar(db.select(db.func.count()).select_from(LeadImport)) == 0
    assert "Import CSV" not in agent.get("/leads/").get_data(as_text=True)
