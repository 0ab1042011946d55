"""CSV imports through the API (CONTRACT.md): POST /api/v1/leads/imports, GET its report."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import func, select

from crm.extensions import db
from crm.leads import csvfile
from crm.leads.models import Lead, LeadImport
from tests import factories
from tests.leads.csvs import br_mobile, csv_bytes, leads_by_phone, stored_imports, upload, with_bad_rows
from tests.whatsapp.conftest import Api

REPORT_KEYS = {
    "id",
    "status",
    "total_rows",
    "processed_rows",
    "created",
    "updated",
    "skipped",
    "errors_count",
    "errors",
}


@pytest.fixture
def nothing_stored() -> Callable[[], bool]:
    """Whether no import row and no new import file exist since the test began."""
    before = stored_imports()

    def check() -> bool:
        no_rows = db.session.scalar(select(func.count()).select_from(LeadImport)) == 0
        return no_rows and stored_imports() == before

    return check


def test_an_import_is_accepted_then_reports_what_it_did(api: Api, owner: factories.Person) -> None:
    rows, bad_lines = with_bad_rows(60)
    response = upload(api.client, api.headers, csv_bytes(rows))
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert set(body) == {"id", "status"} and body["status"] == "queued" and isinstance(body["id"], int)

    report = api.get(f"/leads/imports/{body['id']}").get_json()
    assert set(report) >= REPORT_KEYS
    assert report["status"] == "done"
    assert (report["total_rows"], report["processed_rows"]) == (60, 60)
    assert (report["created"], report["updated"], report["skipped"], report["errors_count"]) == (57, 0, 0, 3)
    assert report["errors"] == [
        {"line": 21, "reason": "No phone number."},
        {"line": 41, "reason": "Not a phone number: 12345"},
        {"line": 61, "reason": "Not a valid email address: not-an-email"},
    ]
    assert {e["line"] for e in report["errors"]} == bad_lines


def test_the_report_lists_the_first_100_errors(api: Api) -> None:
    rows = [("", f"Sem telefone {n}", "", "") for n in range(150)] + [(br_mobile(1), "Ok", "", "")]
    body = upload(api.client, api.headers, csv_bytes(rows)).get_json()
    report = api.get(f"/leads/imports/{body['id']}").get_json()
    assert (report["errors_count"], report["created"], len(report["errors"])) == (150, 1, 100)
    assert [e["line"] for e in report["errors"]] == list(range(2, 102))


def test_options_duplicates_tags_consent_and_country(api: Api, owner: factories.Person) -> None:
    lead_id = factories.lead(owner, phone="+14155552671", name="Antigo")
    rows = [("(415) 555-2671", "Novo", "", ""), ("(212) 555-0100", "Outro", "", "")]
    response = upload(
        api.client, api.headers, csv_bytes(rows), on_duplicate="update", tags="Feira, vip", opt_in="true",
        default_country="us",
    )  # fmt: skip
    report = api.get(f"/leads/imports/{response.get_json()['id']}").get_json()
    assert (report["created"], report["updated"]) == (1, 1)
    leads = leads_by_phone(owner.workspace_id)
    assert leads["+14155552671"].id == lead_id and leads["+14155552671"].name == "Novo"
    assert all(lead.opt_in and set(lead.tag_names) == {"Feira", "vip"} for lead in leads.values())


def test_a_file_without_a_phone_column_is_422_and_nothing_is_stored(
    api: Api, nothing_stored: Callable[[], bool]
) -> None:
    response = upload(api.client, api.headers, b"nome,email\r\nAna,ana@example.com\r\n")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "no_phone_column"
    assert response.get_json()["error"]["message"]
    assert nothing_stored()


@pytest.mark.parametrize(
    ("data", "form", "status", "code"),
    [
        (b"", {}, 422, "empty_file"),
        (b"\x00\x01\x02binary", {}, 422, "not_csv"),
        (b"\r\n\r\n", {}, 422, "no_header"),
        (b"phone\r\n1199\r\n", {"on_duplicate": "merge"}, 422, "invalid_on_duplicate"),
        (b"phone\r\n1199\r\n", {"opt_in": "maybe"}, 422, "invalid_parameter"),
        (b"phone\r\n1199\r\n", {"default_country": "XX"}, 422, "invalid_country"),
        (b"phone\r\n1199\r\n", {"tags": "a" * 65}, 422, "invalid_tags"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(
    api: Api, nothing_stored: Callable[[], bool], data: bytes, form: dict[str, str], status: int, code: str
) -> None:
    response = upload(api.client, api.headers, data, **form)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert nothing_stored()


def test_no_file_is_a_clear_error(api: Api) -> None:
    response = api.client.post("/api/v1/leads/imports", data={"tags": "x"}, headers=api.headers)
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "invalid_file"
    assert api.post("/leads/imports", {"file": "phone\n1"}).status_code == 422  # JSON is no upload


def test_a_file_over_the_limit_is_413(
    api: Api, nothing_stored: Callable[[], bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csvfile, "MAX_BYTES", 2000)
    big = csv_bytes([(br_mobile(n), "x" * 30, "", "") for n in range(200)])
    response = upload(api.client, api.headers, big)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "file_too_large"
    assert nothing_stored()
    just_under = csv_bytes([(br_mobile(n), "x", "", "") for n in range(40)])
    assert len(just_under) < 2000 and upload(api.client, api.headers, just_under).status_code == 202


def test_files_larger_than_the_media_limit_are_taken(api: Api, app: Flask) -> None:
    """The app's MAX_CONTENT_LENGTH is sized for media; imports have their own (larger) limit."""
    saved = app.config["MAX_CONTENT_LENGTH"]
    app.config["MAX_CONTENT_LENGTH"] = 1000
    try:
        response = upload(
            api.client, api.headers, csv_bytes([(br_mobile(n), "x" * 30, "", "") for n in range(100)])
        )
    finally:
        app.config["MAX_CONTENT_LENGTH"] = saved
    assert response.status_code == 202


def test_every_bad_row_downloads_as_csv(api: Api) -> None:
    rows = [("=cmd|' /C calc'!A0", "Fórmula", "", ""), (br_mobile(1), "Ok", "", ""), ("", "Vazio", "", "")]
    body = upload(api.client, api.headers, csv_bytes(rows)).get_json()
    response = api.client.get(f"/api/v1/leads/imports/{body['id']}/errors.csv", headers=api.headers)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    text = response.get_data().decode("utf-8")
    assert text.startswith("\ufeff")
    table = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert table[0] == ["line", "reason", "phone", "name", "email", "tags"]
    assert table[1][:4] == ["2", "Not a phone number: =cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0", "Fórmula"]
    assert table[2][:4] == ["4", "No phone number.", "", "Vazio"]
    assert len(table) == 3


def test_another_workspaces_import_is_404(api: Api, owner: factories.Person) -> None:
    other = factories.person("Outra", "outra@example.com", role="owner")
    theirs = factories.lead_import(other)
    for path in (f"/leads/imports/{theirs}", f"/leads/imports/{theirs}/errors.csv", "/leads/imports/999999"):
        response = api.get(path)
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_the_api_needs_a_token(api: Api) -> None:
    response = upload(api.client, {}, csv_bytes([(br_mobile(1), "x", "", "")]))
    assert response.status_code == 401
    assert db.session.scalar(select(func.count()).select_from(Lead)) == 0


def test_the_report_speaks_the_language_of_the_request(api: Api) -> None:
    headers = {**api.headers, "Accept-Language": "pt-BR,pt;q=0.9"}
    body = upload(api.client, headers, csv_bytes([("", "Sem telefone", "", "")])).get_json()
    lead_import = db.session.get(LeadImport, body["id"])
    assert lead_import is not None and lead_import.locale == "pt_BR"
