"""CSV imports: what each row becomes. Phones, bad rows, duplicates, tags, consent, custom fields."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import func, select

from crm.errors import ValidationFailed
from crm.extensions import db
from crm.leads.consent import ConsentChange, set_consent
from crm.leads.import_copy import _copy_fields
from crm.leads.imports import first_errors, start_import
from crm.leads.models import ConsentEvent, ConsentSource, Lead, LeadImport, LeadTag
from crm.leads.trash import trash_leads
from tests import factories
from tests.leads.csvs import br_e164, br_mobile, csv_bytes, import_file, leads_by_phone, with_bad_rows


def errors_of(lead_import: LeadImport) -> dict[int, str]:
    return {e.line: e.reason for e in first_errors(lead_import.workspace_id, lead_import.id, limit=10_000)}


def consent_events(lead_id: int | None = None) -> list[ConsentEvent]:
    stmt = select(ConsentEvent).order_by(ConsentEvent.id)
    if lead_id is not None:
        stmt = stmt.where(ConsentEvent.lead_id == lead_id)
    return list(db.session.scalars(stmt))


def count(model: type) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0


@pytest.mark.parametrize(
    ("country", "rows", "expected"),
    [
        ("BR", ["(11) 98765-4321", "011 98765 4321", "+55 21 3456-7890", "0055 11 91234-5678",
                "+1 415 555 2671"],
         ["+5511987654321", None, "+552134567890", "+5511912345678", "+14155552671"]),
        ("US", ["(415) 555-2671", "415.555.2672", "+44 20 7946 0958", "1-212-555-0100"],
         ["+14155552671", "+14155552672", "+442079460958", "+12125550100"]),
        ("GB", ["020 7946 0958", "07700 900123", "+351 912 345 678"],
         ["+442079460958", "+447700900123", "+351912345678"]),
        ("PT", ["912 345 678", "00351 213 456 789"], ["+351912345678", "+351213456789"]),
    ],
)  # fmt: skip
def test_phones_are_read_in_the_chosen_country(
    owner: factories.Person, country: str, rows: list[str], expected: list[str | None]
) -> None:
    """The second BR row is the first one again (same number written nationally): skipped."""
    lead_import = import_file(owner, csv_bytes([(phone, f"N{i}", "", "") for i, phone in enumerate(rows)]),
                              default_country=country)  # fmt: skip
    leads = leads_by_phone(owner.workspace_id)
    assert sorted(leads) == sorted(e for e in expected if e)
    assert lead_import.created == len(leads) and lead_import.errors_count == 0
    assert lead_import.skipped == len(rows) - len(leads)
    assert {lead.source for lead in leads.values()} == {"import"}


def test_bad_phones_are_errors_that_say_why(owner: factories.Person) -> None:
    rows = [("", "Vazio"), ("12", "Curto"), ("abc", "Letras"), ("+999 1234 5678", "País"), ("   ", "Espaços")]
    lead_import = import_file(owner, csv_bytes(rows, ("phone", "name")))
    assert (lead_import.created, lead_import.errors_count) == (0, 5)
    reasons = errors_of(lead_import)
    assert reasons[2] == reasons[6] == "No phone number."
    assert reasons[3] == "Not a phone number: 12"
    assert reasons[4] == "Not a phone number: abc" and reasons[5] == "Not a phone number: +999 1234 5678"


def test_five_percent_of_bad_rows_are_all_reported_with_their_lines(owner: factories.Person) -> None:
    rows, bad_lines = with_bad_rows(400)
    lead_import = import_file(owner, csv_bytes(rows))
    assert lead_import.status == "done"
    assert (lead_import.total_rows, lead_import.processed_rows) == (400, 400)
    assert lead_import.errors_count == len(bad_lines) == 20
    assert set(errors_of(lead_import)) == bad_lines
    assert lead_import.created == 380 == count(Lead)
    reasons = errors_of(lead_import)
    assert reasons[21] == "No phone number."
    assert reasons[41] == "Not a phone number: 12345"
    assert reasons[61] == "Not a valid email address: not-an-email"


def test_names_emails_and_custom_fields_are_checked_like_the_form(owner: factories.Person) -> None:
    rows = [
        (br_mobile(1), "  Ana   Lima ", "Ana.Lima@EXAMPLE.com", "", "Acme"),
        (br_mobile(2), "x" * 201, "", "", ""),
        (br_mobile(3), "Tag longa", "", "t" * 65, ""),
        (br_mobile(4), "Campo longo", "", "", "c" * 1001),
    ]
    draft = import_file(owner, csv_bytes(rows, ("phone", "name", "email", "tags", "Empresa")), start=False)
    mapping = {"phone": 0, "name": 1, "email": 2, "tags": 3, "custom": {"Empresa": 4}}
    start_import(owner.workspace_id, draft.id, mapping, _options())
    lead_import = db.session.get(LeadImport, draft.id)
    assert lead_import is not None and (lead_import.created, lead_import.errors_count) == (1, 3)
    lead = leads_by_phone(owner.workspace_id)[br_e164(1)]
    assert (lead.name, lead.email, lead.custom_fields) == (
        "Ana Lima",
        "Ana.Lima@example.com",
        {"Empresa": "Acme"},
    )
    reasons = errors_of(lead_import)
    assert reasons[3] == "The name is longer than 200 characters."
    assert reasons[4].startswith("A tag is longer than 64 characters: ttt")
    assert reasons[5] == "Empresa is longer than 1000 characters."


def _options(**values: object) -> object:
    from crm.leads.imports import ImportOptions

    return ImportOptions(**values)  # type: ignore[arg-type]


def test_a_phone_repeated_in_the_file_is_skipped_and_the_first_row_wins(owner: factories.Person) -> None:
    rows = [
        (br_mobile(1), "Primeira", "primeira@example.com", "a"),
        (br_mobile(2), "Outra", "", ""),
        (br_e164(1), "Segunda", "segunda@example.com", "b"),  # the same number, another spelling
    ]
    lead_import = import_file(owner, csv_bytes(rows))
    assert (lead_import.created, lead_import.skipped, lead_import.updated) == (2, 1, 0)
    lead = leads_by_phone(owner.workspace_id)[br_e164(1)]
    assert (lead.name, lead.email, lead.tag_names) == ("Primeira", "primeira@example.com", ["a"])


def test_a_repeated_phone_across_batches_is_skipped_too(
    owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm.leads import import_run

    monkeypatch.setattr(import_run, "BATCH_ROWS", 2)
    rows = [(br_mobile(n % 3), f"N{n}", "", "") for n in range(7)]
    lead_import = import_file(owner, csv_bytes(rows))
    assert (lead_import.created, lead_import.skipped, lead_import.processed_rows) == (3, 4, 7)
    assert leads_by_phone(owner.workspace_id)[br_e164(0)].name == "N0"


def test_existing_leads_are_skipped(owner: factories.Person) -> None:
    lead_id = factories.lead(owner, phone=br_e164(1), name="Antiga", tags=("velha",))
    lead_import = import_file(owner, csv_bytes([(br_mobile(1), "Nova", "nova@example.com", "nova")]))
    assert (lead_import.created, lead_import.skipped, lead_import.updated) == (0, 1, 0)
    lead = db.session.get(Lead, lead_id)
    assert lead is not None and (lead.name, lead.email, lead.tag_names) == ("Antiga", None, ["velha"])


def test_update_fills_in_replaces_and_adds_tags(owner: factories.Person) -> None:
    lead_id = factories.lead(
        owner, phone=br_e164(1), name="Antiga", tags=("Velha",), custom_fields={"a": "1"}
    )
    rows = [
        (br_mobile(1), "", "nova@EXAMPLE.com", "velha; nova", "", "2"),  # an empty name keeps the old one
        (br_mobile(2), "Novo", "", "", "SP", ""),
        (br_mobile(2), "Novo de novo", "", "outra", "", "3"),  # later rows add to the first
    ]
    header = ("phone", "name", "email", "tags", "cidade", "a")
    draft = import_file(owner, csv_bytes(rows, header), start=False)
    mapping = {"phone": 0, "name": 1, "email": 2, "tags": 3, "custom": {"cidade": 4, "a": 5}}
    start_import(owner.workspace_id, draft.id, mapping, _options(on_duplicate="update", tags=["Lista"]))
    lead_import = db.session.get(LeadImport, draft.id)
    assert lead_import is not None
    assert (lead_import.created, lead_import.updated, lead_import.skipped) == (1, 2, 0)
    leads = leads_by_phone(owner.workspace_id)
    old = leads[br_e164(1)]
    assert old.id == lead_id and (old.name, old.email) == ("Antiga", "nova@example.com")
    assert old.custom_fields == {"a": "2"} and set(old.tag_names) == {"Lista", "nova", "Velha"}
    new = leads[br_e164(2)]
    assert (new.name, new.custom_fields) == ("Novo de novo", {"cidade": "SP", "a": "3"})
    assert set(new.tag_names) == {"Lista", "outra"}


def test_an_update_that_would_overfill_a_lead_is_a_bad_row_and_changes_nothing(
    owner: factories.Person,
) -> None:
    """A lead keeps at most 50 custom fields and 50 tags (the form and the API say so too), whether
    the file brings them all or adds to what the lead has."""
    full_fields = factories.lead(
        owner, phone=br_e164(1), name="Campos", custom_fields={f"f{n}": "x" for n in range(49)}
    )
    full_tags = factories.lead(owner, phone=br_e164(2), name="Tags", tags=tuple(f"t{n}" for n in range(49)))
    rows = [
        (br_mobile(1), "Mudou", "", "", "1", "2"),  # 49 fields + "nova" + "outra": 51
        (br_mobile(2), "Mudou", "", "t1; nova; outra", "", ""),  # 49 tags + 2 new: 51
        (br_mobile(3), "Nova", "", "", "1", "2"),  # a new lead: 2 fields
        (br_mobile(1), "De novo", "", "", "", ""),  # the refused phone again: refused with it
        (br_mobile(4), "Cheia", "", "", "", ""),  # an existing lead that fits: updated
        (br_mobile(5), "Muitas", "", ", ".join(f"x{n}" for n in range(51)), "", ""),  # 51 on one row
    ]
    factories.lead(owner, phone=br_e164(4), name="Antes", tags=tuple(f"t{n}" for n in range(50)))
    header = ("phone", "name", "email", "tags", "nova", "outra")
    draft = import_file(owner, csv_bytes(rows, header), start=False)
    mapping = {"phone": 0, "name": 1, "email": 2, "tags": 3, "custom": {"nova": 4, "outra": 5}}
    start_import(owner.workspace_id, draft.id, mapping, _options(on_duplicate="update"))
    lead_import = db.session.get(LeadImport, draft.id)
    assert lead_import is not None and lead_import.status == "done"
    counts = (lead_import.created, lead_import.updated, lead_import.skipped, lead_import.errors_count)
    assert counts == (1, 1, 0, 4)
    assert errors_of(lead_import) == {
        2: "The lead would have more than 50 custom fields.",
        3: "The lead would have more than 50 tags.",
        5: "The lead would have more than 50 custom fields.",
        7: "The lead would have more than 50 tags.",
    }
    leads = leads_by_phone(owner.workspace_id)
    assert leads[br_e164(1)].id == full_fields and leads[br_e164(1)].name == "Campos"
    assert len(leads[br_e164(1)].custom_fields or {}) == 49
    assert leads[br_e164(2)].id == full_tags and leads[br_e164(2)].name == "Tags"
    assert len(leads[br_e164(2)].tag_names) == 49
    assert leads[br_e164(3)].custom_fields == {"nova": "1", "outra": "2"}
    assert leads[br_e164(4)].name == "Cheia" and len(leads[br_e164(4)].tag_names) == 50


def test_update_mode_limits_hold_within_the_file_and_for_leads_already_over_them(
    owner: factories.Person,
) -> None:
    """Rows of one new phone add up (over 50 tags: the row that passes it is bad); a lead already
    over a limit can still get a new name; a lead saved without fields gets the file's."""
    over = factories.lead(owner, phone=br_e164(1), name="Antes")
    db.session.add_all(LeadTag(workspace_id=owner.workspace_id, lead_id=over, name=f"t{n}", key=f"t{n}")
                       for n in range(51))  # fmt: skip
    db.session.commit()
    no_fields = factories.lead(owner, phone=br_e164(2), name="Sem campos")
    rows = [
        (br_mobile(1), "Depois", "", ""),  # adds no tag: updated
        (br_mobile(3), "Nova", "", ", ".join(f"a{n}" for n in range(30))),
        (br_mobile(3), "", "", ", ".join(f"b{n}" for n in range(30))),  # 60 with the row above
        (br_mobile(2), "", "", ""),
    ]
    header = ("phone", "name", "email", "tags", "cidade")
    draft = import_file(owner, csv_bytes([(*row, "Recife") for row in rows], header), start=False)
    mapping = {"phone": 0, "name": 1, "tags": 3, "custom": {"cidade": 4}}
    start_import(owner.workspace_id, draft.id, mapping, _options(on_duplicate="update"))
    lead_import = db.session.get(LeadImport, draft.id)
    assert lead_import is not None and lead_import.status == "done"
    assert errors_of(lead_import) == {4: "The lead would have more than 50 tags."}
    assert (lead_import.created, lead_import.updated, lead_import.errors_count) == (1, 2, 1)
    leads = leads_by_phone(owner.workspace_id)
    assert leads[br_e164(1)].id == over and leads[br_e164(1)].name == "Depois"
    assert len(leads[br_e164(3)].tag_names) == 30
    assert leads[br_e164(2)].id == no_fields and leads[br_e164(2)].custom_fields == {"cidade": "Recife"}


def test_every_row_of_a_phone_whose_update_is_refused_is_reported(owner: factories.Person) -> None:
    """The rows of one phone in a batch are applied together: when that would overfill the lead,
    none of them is, and each is a bad row on its own line (not the first alone, the others
    counted as skipped)."""
    full = factories.lead(owner, phone=br_e164(1), name="Antes")
    db.session.add_all(LeadTag(workspace_id=owner.workspace_id, lead_id=full, name=f"t{n}", key=f"t{n}")
                       for n in range(49))  # fmt: skip
    db.session.commit()
    rows = [
        (br_mobile(1), "Depois", "", "n1"),  # line 2
        (br_mobile(2), "Outra", "", ""),  # line 3: a new lead
        (br_mobile(1), "", "", "n2"),  # line 4: 51 tags with line 2
        (br_mobile(1), "De novo", "", ""),  # line 5
    ]
    lead_import = import_file(owner, csv_bytes(rows), on_duplicate="update")
    reason = "The lead would have more than 50 tags."
    assert errors_of(lead_import) == {2: reason, 4: reason, 5: reason}
    counts = (lead_import.created, lead_import.updated, lead_import.skipped, lead_import.errors_count)
    assert counts == (1, 0, 0, 3)
    lead = leads_by_phone(owner.workspace_id)[br_e164(1)]
    assert lead.name == "Antes" and len(lead.tag_names) == 49


def test_leads_in_the_trash_are_existing_leads(owner: factories.Person) -> None:
    lead_id = factories.lead(owner, phone=br_e164(1), name="Na lixeira")
    trash_leads(owner.workspace_id, [lead_id])
    skipped = import_file(owner, csv_bytes([(br_mobile(1), "X", "", "")]))
    assert (skipped.created, skipped.skipped) == (0, 1)
    lead = db.session.get(Lead, lead_id)
    assert lead is not None and lead.deleted_at is not None
    updated = import_file(owner, csv_bytes([(br_mobile(1), "De volta", "", "")]), on_duplicate="update")
    assert (updated.created, updated.updated) == (0, 1)
    db.session.refresh(lead)
    assert lead.deleted_at is None and lead.name == "De volta"


def test_a_refused_start_leaves_the_draft_as_it_was(owner: factories.Person) -> None:
    draft = import_file(owner, csv_bytes([(br_mobile(1), "Ana", "", "")]), start=False)
    as_uploaded = (draft.default_country, draft.tags, draft.on_duplicate, draft.opt_in)
    mapping = {"phone": 0, "name": 1}
    refused = _options(on_duplicate="merge", tags=["feira"], default_country="PT", opt_in=True)
    with pytest.raises(ValidationFailed):
        start_import(owner.workspace_id, draft.id, mapping, refused)
    # Not even in the session: a commit later in the same request would have kept it.
    assert (draft.default_country, draft.tags, draft.on_duplicate, draft.opt_in) == as_uploaded
    assert draft.status == "draft"


def test_tags_for_everyone_and_per_row_match_without_case(owner: factories.Person) -> None:
    rows = [(br_mobile(1), "A", "", "VIP, cliente;  São  Paulo "), (br_mobile(2), "B", "", "")]
    import_file(owner, csv_bytes(rows), tags=["vip", "Feira 2026", "feira 2026"])
    leads = leads_by_phone(owner.workspace_id)
    assert set(leads[br_e164(1)].tag_names) == {"cliente", "Feira 2026", "São Paulo", "vip"}
    assert set(leads[br_e164(2)].tag_names) == {"Feira 2026", "vip"}
    keys = set(db.session.scalars(select(LeadTag.key)))
    assert keys == {"vip", "feira 2026", "cliente", "são paulo"}


def test_text_that_copy_or_an_array_must_escape_arrives_as_written(owner: factories.Person) -> None:
    """Backslashes, quotes, tabs and line breaks (PostgreSQL receives rows as COPY text and tags as
    array literals, where each means something) are stored as the file has them."""
    rows = [
        (br_mobile(1), "Ana \\ Lima", "", 'a"b; c\\d', "linha 1\nlinha\t2 \\N", "São Paulo"),
        (br_mobile(2), "Bia", "", "x\\", "\\", 'Rua "A", 1'),
        (br_mobile(3), "Caio", "", "", "nada a escapar", "Maceió"),
    ]
    header = ("phone", "name", "email", "tags", "Obs", "Cidade")
    draft = import_file(owner, csv_bytes(rows, header), start=False)
    mapping = {"phone": 0, "name": 1, "email": 2, "tags": 3, "custom": {"Obs": 4, "Cidade": 5}}
    start_import(owner.workspace_id, draft.id, mapping, _options())
    leads = leads_by_phone(owner.workspace_id)
    first, second, third = leads[br_e164(1)], leads[br_e164(2)], leads[br_e164(3)]
    assert (first.name, set(first.tag_names)) == ("Ana \\ Lima", {'a"b', "c\\d"})
    assert first.custom_fields == {"Obs": "linha 1\nlinha\t2 \\N", "Cidade": "São Paulo"}
    assert (second.tag_names, second.custom_fields) == (["x\\"], {"Obs": "\\", "Cidade": 'Rua "A", 1'})
    assert third.custom_fields == {"Obs": "nada a escapar", "Cidade": "Maceió"}


@pytest.mark.parametrize(
    "fields",
    [
        {"Cidade": "São Paulo", "Obs": ""},
        {"Obs": 'diz "oi"'},
        {"Obs": "a\\b", "x": "\t"},
        {"k\n": "\x1f", "Emoji": "🙂\u2028\x7f"},
    ],
)
def test_custom_fields_reach_copy_as_json_dumps_writes_them(fields: dict[str, str]) -> None:
    """Custom fields are sent to PostgreSQL as JSON text without json.dumps when nothing needs
    escaping; the result is what json.dumps gives, as PostgreSQL reads it."""
    copied = _copy_fields(fields)
    assert "\t" not in copied and "\n" not in copied
    unescaped = re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n", "r": "\r"}.get(m[1], m[1]), copied)
    assert json.loads(unescaped) == fields


def test_opt_in_records_the_import_in_the_consent_history(owner: factories.Person) -> None:
    lead_import = import_file(owner, csv_bytes([(br_mobile(1), "A", "", "")]), "clientes.csv", opt_in=True)
    lead = leads_by_phone(owner.workspace_id)[br_e164(1)]
    assert lead.opt_in and lead.opted_in_at is not None and lead.opted_out_at is None
    (event,) = consent_events(lead.id)
    assert (event.opted_in, event.source, event.detail, event.user_id) == (
        True,
        "import",
        "clientes.csv",
        owner.user_id,
    )
    assert lead_import.opt_in


def test_an_import_never_opts_in_someone_who_said_stop(owner: factories.Person) -> None:
    stopped = factories.lead(owner, phone=br_e164(1), name="Parou", opt_in=True)
    set_consent(owner.workspace_id, [stopped], False, ConsentChange(ConsentSource.KEYWORD, detail="SAIR"))
    never = factories.lead(owner, phone=br_e164(2), name="Nunca")
    history = len(consent_events(stopped))
    rows = [(br_mobile(1), "Parou", "", ""), (br_mobile(2), "Nunca", "", "")]
    for on_duplicate in ("skip", "update"):
        import_file(owner, csv_bytes(rows), opt_in=True, on_duplicate=on_duplicate)
    lead = db.session.get(Lead, stopped)
    assert lead is not None and not lead.opt_in and lead.opted_out_at is not None
    assert len(consent_events(stopped)) == history
    other = db.session.get(Lead, never)
    assert other is not None and other.opt_in  # never opted out: "update" opts them in
    assert [e.source for e in consent_events(never)] == ["import"]


def test_importing_the_same_file_again_changes_nothing(owner: factories.Person) -> None:
    rows, bad_lines = with_bad_rows(100)
    data = csv_bytes(rows)
    first = import_file(owner, data, opt_in=True, tags=["a"])
    leads, events, tags = count(Lead), len(consent_events()), count(LeadTag)
    assert first.created == leads == 95 and events == 95
    for on_duplicate in ("skip", "update"):
        again = import_file(owner, data, opt_in=True, tags=["a"], on_duplicate=on_duplicate)
        assert again.created == 0 and again.errors_count == len(bad_lines)
        assert (again.skipped if on_duplicate == "skip" else again.updated) == 95
        assert (count(Lead), len(consent_events()), count(LeadTag)) == (leads, events, tags)


def test_another_workspaces_leads_are_not_duplicates(owner: factories.Person) -> None:
    other = factories.person("Outra", "outra@example.com", role="owner")
    theirs = factories.lead(other, phone=br_e164(1), name="Deles")
    lead_import = import_file(owner, csv_bytes([(br_mobile(1), "Meu", "", "")]), on_duplicate="update")
    assert (lead_import.created, lead_import.updated) == (1, 0)
    assert leads_by_phone(owner.workspace_id)[br_e164(1)].name == "Meu"
    their_lead = db.session.get(Lead, theirs)
    assert their_lead is not None and their_lead.name == "Deles"
