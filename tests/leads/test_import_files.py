"""CSV imports: files as spreadsheets write them (encodings, separators, quotes, ragged rows) and
files that are refused before anything is stored."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from crm.errors import DomainError
from crm.extensions import db
from crm.leads import csvfile
from crm.leads.imports import ImportOptions, create_import, first_errors
from crm.leads.models import LeadImport
from tests import factories
from tests.leads.csvs import br_e164, br_mobile, csv_bytes, import_file, leads_by_phone, stored_imports


def reasons_by_line(lead_import: LeadImport) -> dict[int, str]:
    return {e.line: e.reason for e in first_errors(lead_import.workspace_id, lead_import.id)}


def test_utf8_with_a_bom_keeps_accents_and_finds_the_header(owner: factories.Person) -> None:
    data = csv_bytes([(br_mobile(1), "José Conceição")], ("Telefone", "Nome"), encoding="utf-8-sig")
    lead_import = import_file(owner, data)
    assert (lead_import.encoding, lead_import.status, lead_import.created) == ("utf-8-sig", "done", 1)
    assert lead_import.header == ["Telefone", "Nome"]
    assert leads_by_phone(owner.workspace_id)[br_e164(1)].name == "José Conceição"


def test_windows_1252_with_semicolons_as_excel_saves_it(owner: factories.Person) -> None:
    data = csv_bytes(
        [(br_mobile(1), "João Ação", "Promoção “verão”")],
        ("celular", "nome", "tags"),
        delimiter=";",
        encoding="cp1252",
    )
    lead_import = import_file(owner, data)
    assert (lead_import.encoding, lead_import.delimiter) == ("cp1252", ";")
    lead = leads_by_phone(owner.workspace_id)[br_e164(1)]
    assert lead.name == "João Ação" and lead.tag_names == ["Promoção “verão”"]


def test_latin1_when_a_byte_is_undefined_in_windows_1252(owner: factories.Person) -> None:
    data = csv_bytes([(br_mobile(1), "Zoë\x81")], ("phone", "name"), encoding="latin-1")
    lead_import = import_file(owner, data)
    assert lead_import.encoding == "latin-1"
    assert leads_by_phone(owner.workspace_id)[br_e164(1)].name == "Zoë\x81"


def test_the_encoding_is_decided_by_every_byte_not_the_first_kilobytes(owner: factories.Person) -> None:
    """A UTF-8-looking first megabyte and one Windows-1252 row at the end: the whole file is
    Windows-1252, so that last name reads right."""
    rows = [(br_mobile(n), f"Cliente {n} " + "x" * 40) for n in range(30_000)]
    data = csv_bytes(rows, ("phone", "name")) + f"{br_mobile(30_001)},Conceição\r\n".encode("cp1252")
    assert len(data) > 1024 * 1024
    lead_import = import_file(owner, data)
    assert lead_import.encoding == "cp1252"
    assert (lead_import.created, lead_import.errors_count) == (30_001, 0)
    assert leads_by_phone(owner.workspace_id)[br_e164(30_001)].name == "Conceição"


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_separators(owner: factories.Person, delimiter: str) -> None:
    rows = [(br_mobile(1), "Silva, Ana", "ana@example.com", "a;b"), (br_mobile(2), "Bia", "", "")]
    lead_import = import_file(owner, csv_bytes(rows, delimiter=delimiter))
    assert (lead_import.delimiter, lead_import.created, lead_import.errors_count) == (delimiter, 2, 0)
    assert leads_by_phone(owner.workspace_id)[br_e164(1)].name == "Silva, Ana"


def test_quoted_cells_with_separators_and_line_breaks_keep_the_line_numbers(owner: factories.Person) -> None:
    rows = [
        (br_mobile(1), "Souza, Maria", "", ""),  # line 2
        (br_mobile(2), "Primeira linha\nsegunda linha\nterceira", "", 'vip, "ouro"'),  # lines 3-5
        ("", "Sem telefone", "", ""),  # line 6
        (br_mobile(3), 'Ana "Aninha" Lima', "", ""),  # line 7
        ("abc", "Letras", "", ""),  # line 8
    ]
    lead_import = import_file(owner, csv_bytes(rows))
    assert (lead_import.created, lead_import.errors_count, lead_import.total_rows) == (3, 2, 5)
    assert set(reasons_by_line(lead_import)) == {6, 8}
    leads = leads_by_phone(owner.workspace_id)
    assert leads[br_e164(2)].name == "Primeira linha segunda linha terceira"
    assert set(leads[br_e164(2)].tag_names) == {'"ouro"', "vip"}
    assert leads[br_e164(3)].name == 'Ana "Aninha" Lima'


def test_ragged_rows_missing_cells_are_empty_and_extra_cells_ignored(owner: factories.Person) -> None:
    text = (
        "name,phone,email\r\n"
        f"Curta,{br_mobile(1)}\r\n"  # no email cell
        f"Longa,{br_mobile(2)},longa@example.com,extra,mais\r\n"
        "Só nome\r\n"  # no phone cell at all
    )
    lead_import = import_file(owner, text.encode())
    assert (lead_import.created, lead_import.errors_count) == (2, 1)
    assert list(reasons_by_line(lead_import)) == [4]
    leads = leads_by_phone(owner.workspace_id)
    assert leads[br_e164(1)].email is None and leads[br_e164(2)].email == "longa@example.com"


def test_long_lines_under_the_limit_across_chunks_are_fine(owner: factories.Person) -> None:
    rows = [(br_mobile(n), "Ana", "x" * 900) for n in range(3000)]  # 2.7 MB: lines cross chunks
    assert import_file(owner, csv_bytes(rows, ("phone", "name", "obs"))).created == 3000


def test_blank_lines_are_not_rows_but_still_count_as_lines(owner: factories.Person) -> None:
    text = f"phone,name\n\n{br_mobile(1)},A\n,\n\n12,Curto\r{br_mobile(2)},B\r"
    lead_import = import_file(owner, text.encode())
    assert (lead_import.total_rows, lead_import.created, lead_import.errors_count) == (3, 2, 1)
    assert list(reasons_by_line(lead_import)) == [6]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            ("TELEFONE", "Nome Completo", "E-mail", "Etiquetas"),
            {"phone": 0, "name": 1, "email": 2, "tags": 3},
        ),
        (("Cidade", "WhatsApp", "nome", "Telefone"), {"phone": 1, "name": 2, "email": None, "tags": None}),
        (("Celular",), {"phone": 0, "name": None, "email": None, "tags": None}),
        ((" Fone ", "e_mail", "Tags"), {"phone": 0, "name": None, "email": 1, "tags": 2}),
        (("Mobile", "Name"), {"phone": 0, "name": 1, "email": None, "tags": None}),
        (("Empresa", "Cargo"), {"phone": None, "name": None, "email": None, "tags": None}),
    ],
)
def test_columns_are_found_by_header_without_case_or_accents(header: tuple[str, ...], expected: dict) -> None:
    assert csvfile.guess_mapping(list(header)) == {**expected, "custom": {}}


def reject(p: factories.Person, data: bytes) -> DomainError:
    before = stored_imports()
    with pytest.raises(DomainError) as caught:
        create_import(p.workspace_id, p.user_id, io.BytesIO(data), "x.csv", ImportOptions(), start=True)
    assert db.session.scalar(select(func.count()).select_from(LeadImport)) == 0
    assert stored_imports() == before
    return caught.value


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not_csv"),
        ("phone,name\r\n".encode("utf-16"), "not_csv"),
        (b"\r\n\r\n,,\r\n", "no_header"),
        (b'phone,name\r\n"' + b"x" * 200_000 + b"\r\n", "malformed_csv"),
        (b"phone\x01,name\r\n1,2\r\n", "not_csv"),
        (b"phone,name\r\n" + b"1" * (csvfile.MAX_LINE + 100), "not_csv"),
        (
            b"phone,name\r" + b"2" * (csvfile.CHUNK - 20) + b"\n" + b"3" * (csvfile.MAX_LINE + 1) + b"\n",
            "not_csv",
        ),
    ],
    ids=[
        "empty",
        "png",
        "utf16",
        "blank",
        "unclosed-quote",
        "control-chars",
        "endless-line",
        "line-across-chunks",
    ],
)
def test_bad_files_are_refused_and_nothing_is_stored(owner: factories.Person, data: bytes, code: str) -> None:
    assert reject(owner, data).code == code


def test_an_unclosed_quote_is_reported_on_the_line_where_its_record_starts(owner: factories.Person) -> None:
    data = b'phone,name\r\n11987654321,Ana\r\n\r\n11912345678,"Bia\r\n' + b"x" * 200_000 + b"\r\n"
    rejected = reject(owner, data)
    assert rejected.code == "malformed_csv" and rejected.message.startswith("Line 4 of the file")


def test_a_file_over_the_limit_is_refused_while_it_is_read(
    owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csvfile, "MAX_BYTES", 1000)
    error = reject(owner, csv_bytes([(br_mobile(n), "x" * 20) for n in range(100)]))
    assert (error.status, error.code) == (413, "file_too_large")


def test_too_many_rows_are_refused(owner: factories.Person, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csvfile, "MAX_ROWS", 3)
    assert reject(owner, csv_bytes([(br_mobile(n), "x") for n in range(4)])).code == "too_many_rows"


def test_a_file_without_a_phone_column_is_refused_when_started(owner: factories.Person) -> None:
    assert reject(owner, b"nome,email\r\nAna,ana@example.com\r\n").code == "no_phone_column"


def test_an_upload_keeps_its_preview_for_the_mapping_page(owner: factories.Person) -> None:
    rows = [(br_mobile(n), f"Cliente {n}", "", "") for n in range(8)]
    draft = import_file(owner, csv_bytes(rows), start=False)
    assert draft.status == "draft" and draft.total_rows == 8
    assert draft.preview is not None and len(draft.preview) == csvfile.PREVIEW_ROWS
    assert draft.preview[0][:2] == [br_mobile(0), "Cliente 0"]
    assert draft.storage_key in stored_imports()
