"""Leads as services and through the API: phones, duplicates, edits, search, trash, merge, export."""

from __future__ import annotations

import csv
import importlib.util
import io
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError

from crm.auth.models import Workspace
from crm.db import FOLD_FROM, FOLD_TO, utcnow
from crm.errors import DomainError, NotFound, ValidationFailed
from crm.extensions import db
from crm.inbox.models import Conversation, Message
from crm.leads.consent import ConsentChange
from crm.leads.merge import merge_leads, phone_variants, possible_duplicates
from crm.leads.models import ConsentEvent, ConsentSource, Lead, LeadTag
from crm.leads.phones import for_humans, to_e164
from crm.leads.search import (
    Consent,
    LeadFilter,
    Sort,
    capped_count,
    filtered_leads,
    list_leads,
    search_text,
)
from crm.leads.services import DuplicateLead, LeadChanges, create_lead, get_lead, update_lead
from crm.leads.trash import purge_expired_trash, restore_leads, trash_leads
from crm.whatsapp.models import WhatsAppAccount
from tests import factories
from tests.whatsapp.conftest import Api

FORM = ConsentChange(ConsentSource.FORM)


@pytest.mark.parametrize(
    ("typed", "country", "e164"),
    [
        ("(11) 98765-4321", "BR", "+5511987654321"),
        ("011 98765 4321", "BR", "+5511987654321"),
        ("+55 21 3456-7890", "US", "+552134567890"),
        ("0055 11 98765-4321", "BR", "+5511987654321"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("+351 912 345 678", "BR", "+351912345678"),
        ("030 123456", "DE", "+4930123456"),
        ("55 1234 5678", "MX", "+525512345678"),
        ("011 15-2345-6789", "AR", "+5491123456789"),
        ("612 34 56 78", "ES", "+34612345678"),
    ],
)
def test_phones_are_read_in_the_default_country(typed: str, country: str, e164: str) -> None:
    assert to_e164(typed, country) == e164


@pytest.mark.parametrize("typed", ["", "abc", "123", "+55", "+999 1234 5678", "1" * 30, "+55 11 9876\x00"])
def test_bad_phones_are_refused(typed: str) -> None:
    with pytest.raises(ValidationFailed) as error:
        to_e164(typed, "BR")
    assert error.value.code == "invalid_phone"


def test_phones_are_shown_for_humans() -> None:
    assert for_humans("+5511987654321") == "+55 11 98765-4321"
    assert for_humans(None) == ""


def test_a_phone_is_one_lead_per_workspace_even_in_the_trash(owner: factories.Person) -> None:
    first = factories.lead(owner, "+5511987654321")
    with pytest.raises(DuplicateLead) as error:
        create_lead(owner.workspace_id, phone="(11) 98765-4321")
    assert error.value.lead_id == first and error.value.status == 409
    trash_leads(owner.workspace_id, [first])
    with pytest.raises(DuplicateLead) as error:
        create_lead(owner.workspace_id, phone="11987654321")
    assert "trash" in error.value.message and error.value.lead_id == first
    other = factories.person("Other", "other@example.com", role="owner")
    assert factories.lead(other, "+5511987654321")  # another workspace may have the same person


def test_a_tag_belongs_to_its_leads_workspace_and_goes_with_it(owner: factories.Person) -> None:
    lead_id = factories.lead(owner, "+5511987654321", "Ana", tags=("vip",))
    other = factories.person("Other", "other@example.com", role="owner")
    with pytest.raises(IntegrityError):  # one key holds the lead and its workspace together
        db.session.execute(
            insert(LeadTag).values(workspace_id=other.workspace_id, lead_id=lead_id, name="x", key="x")
        )
    db.session.rollback()
    db.session.execute(delete(Workspace).where(Workspace.id == owner.workspace_id))
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(LeadTag)) == 0


def test_a_leads_tags_are_found_by_its_key_through_an_index(owner: factories.Person) -> None:
    """The cascade and the lazy load look tags up by (workspace_id, lead_id): an index, not a scan
    of every tag in the workspace (SQLite has no statistics to choose between them)."""
    lead_id = factories.lead(owner, "+5511987654321", "Ana", tags=("vip",))
    where = "workspace_id = :ws AND lead_id = :lead"
    if db.engine.dialect.name == "sqlite":
        plan = " ".join(
            str(row[-1])
            for row in db.session.execute(
                text(f"EXPLAIN QUERY PLAN SELECT name FROM lead_tags WHERE {where}"),
                {"ws": owner.workspace_id, "lead": lead_id},
            )
        )
        assert "USING INDEX" in plan and "(lead_id=? AND workspace_id=?)" in plan, plan
    found = db.session.scalars(
        text(f"SELECT name FROM lead_tags WHERE {where}"), {"ws": owner.workspace_id, "lead": lead_id}
    )
    assert list(found) == ["vip"]


def test_an_edit_is_checked_whole_before_anything_changes(owner: factories.Person) -> None:
    lead_id = factories.lead(owner, "+5511987654321", "Ana", tags=("vip",))
    factories.lead(owner, "+5511911112222", "Bia")
    for changes in (
        LeadChanges(name="Ana Maria", phone="not a phone"),
        LeadChanges(name="Ana Maria", email="nope"),
        LeadChanges(name="Ana Maria", phone="+5511911112222"),
        LeadChanges(name="Ana Maria", custom_fields={"plan": ["a list"]}),
        LeadChanges(name="Ana Maria", custom_fields={"": "empty name"}),
        LeadChanges(name="Ana Maria", custom_fields={"Plano": "Ouro", "plano": "Prata"}),
        LeadChanges(name="Ana Maria", tags=["x" * 65]),
        LeadChanges(name="Ana Maria", tags=[f"tag {i}" for i in range(51)]),
    ):
        with pytest.raises((ValidationFailed, DuplicateLead)):
            update_lead(owner.workspace_id, lead_id, changes, FORM)
        db.session.rollback()
    lead = get_lead(owner.workspace_id, lead_id)
    assert (lead.name, lead.phone, lead.tag_names) == ("Ana", "+5511987654321", ["vip"])


def test_an_edit_changes_fields_and_records_consent(owner: factories.Person) -> None:
    lead_id = factories.lead(owner, "+5511987654321", "Ana")
    change = ConsentChange(ConsentSource.FORM, user_id=owner.user_id, detail="phone call")
    lead = update_lead(
        owner.workspace_id,
        lead_id,
        LeadChanges(
            phone="(11) 97777-6666",
            email="Ana@Example.com",
            notes="Prefers mornings",
            tags=["Cliente", "cliente", "VIP"],
            custom_fields={"Empresa": "Padaria", "plano": 3, "vazio": ""},
            opt_in=True,
        ),
        change,
    )
    assert lead.phone == "+5511977776666" and lead.email == "Ana@example.com"
    assert lead.tag_names == ["Cliente", "VIP"]
    assert lead.custom_fields == {"Empresa": "Padaria", "plano": "3"}
    event = db.session.scalar(select(ConsentEvent))
    assert event is not None and (event.opted_in, event.user_id, event.detail) == (
        True,
        owner.user_id,
        "phone call",
    )


def found(owner: factories.Person, q: str) -> list[int]:
    """The ids of the leads a search for ``q`` lists, newest first."""
    page = list_leads(owner.workspace_id, LeadFilter(q=q), Sort.NEWEST, 50, None)
    return [lead.id for lead in page.items]


def test_search_finds_name_email_notes_and_phone_as_typed(owner: factories.Person) -> None:
    ana = factories.lead(owner, "+5511987654321", "Ana Souza", email="Ana.S@padaria.com.br")
    bia = factories.lead(owner, "+5521911112222", "Bia", notes="Cliente da loja 100% fiel")
    factories.lead(owner, "+5531933334444", "Caio", email="caio@ana.example")

    assert found(owner, "souza") == [ana]
    assert found(owner, "ANA.S@PAD") == [ana]  # the email from its start
    assert found(owner, "ana.s@padaria.com.br") == [ana]
    assert found(owner, "padaria.com") == found(owner, "@PADARIA") == [ana]  # from its middle
    assert found(owner, "padaria") == [ana]  # from its middle too, when nothing else matched
    assert found(owner, "padaria loja") == []  # with a space, no email
    assert found(owner, "100%") == [bia]  # LIKE wildcards are matched literally
    assert found(owner, "(11) 98765-4321") == [ana]
    assert found(owner, "nobody") == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("98765-4321", "ana"),  # the number without the area code
        ("4321", "ana"),  # its last digits
        ("5-4321", "ana"),
        ("+55 11 98765", "ana"),  # its start, with the country code
        ("(11) 9876", "ana"),  # its start as written at home: the workspace's country code
        ("011 9876", "ana"),  # the trunk prefix isn't part of the number
        ("0055 21", "bia"),
        ("2222", "bia"),
        ("+1 415", "us"),
        ("999", None),  # three digits are too few to search a phone by
        ("0 015", None),  # no start of a number once the trunk prefix is off (not "+55 15")
        ("0015", None),  # nor once "00" is read as "+" (not every number of "+15")
        ("0055", None),  # (not every number of "+55")
        ("8765", "ana"),  # from the middle, looked for in every lead as nothing else matched
        ("Ana 4321", None),  # with letters, not a phone
    ],
)
def test_search_finds_a_phone_by_its_start_or_its_end(
    owner: factories.Person, query: str, expected: str | None
) -> None:
    leads = {
        "ana": factories.lead(owner, "+5511987654321", "Ana"),
        "bia": factories.lead(owner, "+5521911112222", "Bia"),
        "us": factories.lead(owner, "+14155552671", "Sam"),
        "nines": factories.lead(owner, "+5599999999999", "Nove"),
        "sorocaba": factories.lead(owner, "+551534567890", "Sorocaba"),
        "us2": factories.lead(owner, "+15125550123", "Pat"),
    }
    assert found(owner, query) == ([leads[expected]] if expected else [])


def test_fragments_are_looked_for_only_when_nothing_else_matches(owner: factories.Person) -> None:
    """A part from the middle of an email or a phone has no index: a search reads every lead for
    it only when the indexed ways find nobody, and then the same way for every page."""
    bia = factories.lead(owner, "+5521911112222", "Bia", email="bia@loja.com")
    caio = factories.lead(owner, "+5531933334444", "Caio", notes="Fornecedor da loja.com")
    assert found(owner, "loja.com") == [caio]  # in the notes: indexed
    assert found(owner, "@loja.com") == [bia]  # only in an email, from its middle
    assert found(owner, "1111") == [bia]  # only in a phone, from its middle
    assert capped_count(owner.workspace_id, LeadFilter(q="1111")) == 1


def test_a_search_pages_on_the_way_its_first_page_chose(owner: factories.Person) -> None:
    """A lead written or deleted between two pages doesn't switch a search between the indexed
    ways and fragments: the next page would continue another list from the cursor."""
    other = factories.lead(owner, "+5531999990000", "Other", email="o@padaria-sul.com")  # a fragment
    shops = [
        factories.lead(owner, f"+55219111{n}2222", f"Loja {n}", email=f"l{n}@loja.com") for n in range(3)
    ]
    bakeries = [factories.lead(owner, f"+55319222{n}3333", f"Padaria {n}") for n in range(3)]

    def pages(q: str, between: Callable[[], object]) -> list[list[int]]:
        first = list_leads(owner.workspace_id, LeadFilter(q=q), Sort.NEWEST, 2, None)
        assert first.next_cursor is not None
        between()
        second = list_leads(owner.workspace_id, LeadFilter(q=q), Sort.NEWEST, 2, first.next_cursor)
        return [[lead.id for lead in first.items], [lead.id for lead in second.items]]

    # By fragments (an email's middle); a lead whose notes have the text arrives between the pages.
    newcomer: list[int] = []

    def arrives() -> None:
        newcomer.append(factories.lead(owner, "+5531900000001", "X", notes="at @loja.com"))

    assert pages("@loja.com", arrives) == [[shops[2], shops[1]], [shops[0]]]
    assert found(owner, "@loja.com") == newcomer  # a new search decides again
    # By the indexes (names); every lead found that way leaves between the pages.
    assert pages("padaria", lambda: trash_leads(owner.workspace_id, bakeries)) == [
        [bakeries[2], bakeries[1]],
        [],
    ]
    assert found(owner, "padaria") == [other]
    # A cursor without the way (an older one) decides again, as before; a bad one is refused.
    cursor = list_leads(owner.workspace_id, LeadFilter(q="loja"), Sort.NEWEST, 1, None).next_cursor
    assert cursor is not None and cursor.startswith("i.")
    again = list_leads(owner.workspace_id, LeadFilter(q="loja"), Sort.NEWEST, 5, cursor[2:])
    assert [lead.id for lead in again.items] == [shops[2], shops[1], shops[0]]
    for bad in ("f.!!", "f.", "i.", "f.i." + cursor[2:]):
        with pytest.raises(DomainError):
            list_leads(owner.workspace_id, LeadFilter(q="loja"), Sort.NEWEST, 1, bad)


def test_search_by_a_start_of_nines_has_no_upper_bound_to_miss(owner: factories.Person) -> None:
    nines = factories.lead(owner, "+5599999999999", "Nove")
    factories.lead(owner, "+5511987654321", "Ana")
    assert found(owner, "+55 99 9999") == [nines] and found(owner, "99 99999") == [nines]


def test_search_ignores_case_and_accents_on_every_database(owner: factories.Person) -> None:
    erica = factories.lead(owner, "+5511987654321", "ÉRICA Ávila", notes="Ótima cliente, ÇA")
    joao = factories.lead(owner, "+5511987654322", "João Conceição", notes="Açougue São Jorge")
    assert found(owner, "érica ávila") == [erica]
    for q in ("Ávila", "ÁVILA", "avila", "ótima", "OTIMA", "cliente, ÇA", "erica"):
        assert found(owner, q) == [erica], q
    for q in ("joao", "JOÃO", "conceicao", "acougue", "sao jorge", "Joa\u0303o"):
        assert found(owner, q) == [joao], q
    # Saved with its accents apart from the letters (Unicode's decomposed form), found all the same.
    apart = factories.lead(owner, "+5511987654323", "Jose\u0301 BrandA\u0303o")
    assert found(owner, "jose brandao") == found(owner, "José Brandão") == [apart]


def test_the_migration_folds_accents_as_the_search_does() -> None:
    """PostgreSQL uses the trigram index only for the expression it was built on: migration 0024
    holds its own copy of the expression and the letters, which must stay those of crm.db."""
    path = Path(__file__).parents[2] / "migrations" / "versions" / "0024_leads_search_fold_ascii.py"
    spec = importlib.util.spec_from_file_location("migration_0024", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert (migration.FOLD_FROM, migration.FOLD_TO) == (FOLD_FROM, FOLD_TO)
    on_postgresql = search_text().compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    assert str(on_postgresql).replace("leads.", "") == migration.SEARCH_TEXT
    assert str(search_text().compile(compile_kwargs={"literal_binds": True})) == (
        f"translate(lower(leads.name || ' ' || leads.notes), '{FOLD_FROM}', '{FOLD_TO}')"
    )


def test_postgresql_folds_ascii_and_other_texts_as_translate_alone_does(owner: factories.Person) -> None:
    """The index's shortcut (lower() alone for a text of one byte per character) gives what
    translate() gives, for every kind of text."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the shortcut is PostgreSQL's")
    texts = [
        "Ana Souza",
        "ANA",
        "",
        "João",
        "JOÃO",
        "Jose\u0301",
        "I\u0130\u0131i",  # the Turkish capital dotted and small dotless i
        "ß",
        "Zoë 1",
        "a\tb",
        "~!@#",
        "日本",
    ]
    for n, name in enumerate(texts):
        factories.lead(owner, f"+551190000{n:04d}", name or "x", notes=name)
    both = db.session.execute(
        select(
            search_text(), func.translate(func.lower(Lead.name + " " + Lead.notes), FOLD_FROM, FOLD_TO)
        ).where(Lead.workspace_id == owner.workspace_id)
    ).all()
    assert len(both) == len(texts) and all(shortcut == full for shortcut, full in both), both
    indexed = db.session.scalar(text("SELECT pg_get_indexdef('ix_leads_search_fold_trgm'::regclass)"))
    assert indexed is not None and "octet_length" in indexed


def test_the_search_uses_its_indexes_on_postgresql(owner: factories.Person) -> None:
    """Each way of finding a lead reads an index: the query's expressions are the ones of
    migrations 0022 and 0024, and the planner knows how few leads each finds, so a search stays
    fast at a million leads."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite searches by scanning")
    factories.lead(owner, "+5511987654321", "Ana", email="ana@example.com")  # found: no fragment search
    connection = db.session.connection()
    connection.execute(  # enough leads for the planner to prefer the indexes to reading them all
        text(
            "INSERT INTO leads (workspace_id, phone, kind, name, email, notes, source, opt_in,"
            " created_at, updated_at)"
            " SELECT :ws, '+55' || (11 + g % 80)::text || '9' || lpad(g::text, 8, '0'), 'person',"
            " 'Lead ' || g::text, 'lead' || g::text || '@example.com', '', 'manual', false, now(), now()"
            " FROM generate_series(1, 20000) AS g"
        ),
        {"ws": owner.workspace_id},
    )
    connection.exec_driver_sql("ANALYZE leads")
    # The list's own query: newest first, a page of 51. With a wrong guess of how many leads match,
    # the planner reads the whole table backwards by id instead.
    filters = LeadFilter(q="(11) 98765-4321")
    statement = filtered_leads(owner.workspace_id, filters).with_only_columns(Lead.id)
    statement = statement.order_by(Lead.id.desc()).limit(51)
    compiled = statement.compile(db.engine)
    plan = "\n".join(
        row[0] for row in connection.exec_driver_sql(f"EXPLAIN (COSTS OFF) {compiled}", compiled.params)
    )
    for index in (
        "ix_leads_search_fold_trgm",
        "ix_leads_workspace_id_email",
        "ix_leads_workspace_id_phone_tail",
        "uq_leads_workspace_id_phone",
    ):
        assert index in plan, plan
    assert "Seq Scan" not in plan, plan
    # An email's start has statistics (a whole-table index on its expression): the planner's guess
    # for one that no lead has is a few rows, not 0.5% of them (100 here, 5,000 at a million).
    guess = connection.exec_driver_sql(
        "EXPLAIN (FORMAT JSON) SELECT id FROM leads WHERE lower(email) LIKE 'zzzz%%'"
    ).scalar_one()
    assert guess[0]["Plan"]["Plan Rows"] < 10, guess


def test_filters_by_consent_tag_source_and_contact(
    owner: factories.Person, sandbox_account: WhatsAppAccount
) -> None:
    opted_in = factories.lead(owner, "+5511900000001", "In", opt_in=True, tags=("VIP",))
    opted_out = factories.lead(owner, "+5511900000002", "Out", opt_in=True)
    from crm.leads.consent import set_consent

    set_consent(owner.workspace_id, [opted_out], False, FORM)
    never = factories.lead(owner, "+5511900000003", "Never")
    factories.inbound(sandbox_account.id, phone="+5511900000004", text="Oi")  # wrote: source inbound
    wrote = db.session.scalar(select(Lead.id).where(Lead.phone == "+5511900000004"))

    def ids(**filters: object) -> set[int]:
        page = list_leads(owner.workspace_id, LeadFilter(**filters), Sort.NEWEST, 50, None)  # type: ignore[arg-type]
        return {lead.id for lead in page.items}

    assert ids(consent=Consent.OPTED_IN) == {opted_in}
    assert ids(consent=Consent.OPTED_OUT) == {opted_out}
    assert ids(consent=Consent.NONE) == {never, wrote}
    assert ids(tag="vip") == {opted_in}
    assert ids(source="inbound") == {wrote}
    assert ids(contacted_within_days=7) == {wrote}
    assert ids(not_contacted_days=7) == {opted_in, opted_out, never}


@pytest.mark.parametrize("sort", [Sort.NAME, Sort.NAME_DESC, Sort.NEWEST, Sort.OLDEST])
def test_keyset_pages_never_skip_or_repeat_equal_names(owner: factories.Person, sort: Sort) -> None:
    ids = [factories.lead(owner, f"+55119000000{i:02d}", "Same" if i % 2 else "Other") for i in range(23)]
    seen: list[int] = []
    cursor = None
    while True:
        page = list_leads(owner.workspace_id, LeadFilter(), sort, 5, cursor)
        seen += [lead.id for lead in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    names = [db.session.get(Lead, i).name for i in seen]  # type: ignore[union-attr]
    if sort == Sort.NAME:
        assert names == sorted(names)
    elif sort == Sort.NAME_DESC:
        assert names == sorted(names, reverse=True)


def test_counts_stop_at_the_cap(owner: factories.Person) -> None:
    for i in range(7):
        factories.lead(owner, f"+55119000001{i:02d}")
    assert capped_count(owner.workspace_id, LeadFilter(), cap=5) == 6  # "5+"
    assert capped_count(owner.workspace_id, LeadFilter(), cap=10) == 7


def test_trash_hides_restores_and_purges_after_the_workspace_days(
    owner: factories.Person, sandbox_account: WhatsAppAccount
) -> None:
    conversation_id = factories.inbound(sandbox_account.id, phone="+5511988887777", text="Oi")
    lead_id = db.session.scalar(select(Conversation.lead_id).where(Conversation.id == conversation_id))
    assert lead_id is not None
    assert trash_leads(owner.workspace_id, [lead_id]) == 1
    with pytest.raises(NotFound):
        get_lead(owner.workspace_id, lead_id)
    trashed = list_leads(owner.workspace_id, LeadFilter(trash=True), Sort.NEWEST, 10, None).items
    assert [lead.id for lead in trashed] == [lead_id]
    assert list_leads(owner.workspace_id, LeadFilter(), Sort.NEWEST, 10, None).items == []
    assert restore_leads(owner.workspace_id, [lead_id]) == 1
    assert get_lead(owner.workspace_id, lead_id).deleted_at is None

    trash_leads(owner.workspace_id, [lead_id])
    assert purge_expired_trash() == 0  # kept for 30 days by default
    lead = db.session.get(Lead, lead_id)
    assert lead is not None
    lead.deleted_at = utcnow() - timedelta(days=31)
    db.session.commit()
    assert purge_expired_trash() == 1
    assert db.session.get(Lead, lead_id) is None
    assert db.session.scalar(select(func.count()).select_from(Message)) == 0


def test_a_trashed_lead_is_out_of_the_inbox_until_they_write(
    owner: factories.Person, sandbox_account: WhatsAppAccount
) -> None:
    from crm.inbox.listing import filtered_conversations

    conversation_id = factories.inbound(sandbox_account.id, phone="+5511988887777", text="Oi")
    lead_id = db.session.scalar(select(Conversation.lead_id))
    trash_leads(owner.workspace_id, [lead_id])  # type: ignore[list-item]

    def inbox() -> list[int]:
        page = filtered_conversations(owner.workspace_id, user_id=owner.user_id, status="all")
        return [c.id for c in page.items]

    assert inbox() == []
    factories.inbound(sandbox_account.id, phone="+5511988887777", text="Voltei")
    assert inbox() == [conversation_id]


def test_brazilian_mobiles_with_and_without_the_ninth_digit_are_duplicates(owner: factories.Person) -> None:
    assert phone_variants("+5511987654321") == ["+551187654321"]
    assert phone_variants("+551187654321") == ["+5511987654321"]
    assert phone_variants("+551134567890") == []  # a landline has no ninth digit
    assert phone_variants("+14155552671") == []
    a = factories.lead(owner, "+5511987654321", "Ana")
    b = factories.lead(owner, "+551187654321", "Ana WhatsApp")
    c = factories.lead(owner, "+5521955554444", "Ana", email="ANA@x.com")
    d = factories.lead(owner, "+5521966665555", "Other", email="ana@x.com")
    assert [lead.id for lead in possible_duplicates(owner.workspace_id, get_lead(owner.workspace_id, a))] == [
        b
    ]
    assert [lead.id for lead in possible_duplicates(owner.workspace_id, get_lead(owner.workspace_id, c))] == [
        d
    ]


def test_merge_moves_conversations_history_and_tags_and_keeps_an_opt_out(
    owner: factories.Person, sandbox_account: WhatsAppAccount
) -> None:
    from crm.leads.consent import set_consent

    keep_conversation = factories.inbound(sandbox_account.id, phone="+5511987654321", text="Oi", name="Ana")
    other_conversation = factories.inbound(sandbox_account.id, phone="+551187654321", text="Sou eu", name="")
    keep = db.session.scalar(select(Lead.id).where(Lead.phone == "+5511987654321"))
    other = db.session.scalar(select(Lead.id).where(Lead.phone == "+551187654321"))
    assert keep is not None and other is not None
    update_lead(owner.workspace_id, other, LeadChanges(tags=["Loja"], email="ana@x.com", opt_in=True), FORM)
    set_consent(owner.workspace_id, [other], False, FORM)

    merged = merge_leads(owner.workspace_id, keep, other)
    assert db.session.get(Lead, other) is None
    assert merged.tag_names == ["Loja"] and merged.email == "ana@x.com" and merged.name == "Ana"
    assert merged.opted_out_at is not None and merged.opt_in is False  # either said stop: stop
    # Both were on the same number: one thread with every message.
    assert db.session.get(Conversation, other_conversation) is None
    texts = db.session.scalars(select(Message.text).where(Message.conversation_id == keep_conversation)).all()
    assert sorted(texts) == ["Oi", "Sou eu"]
    events = db.session.scalars(select(ConsentEvent.source).where(ConsentEvent.lead_id == keep)).all()
    assert sorted(events) == ["form", "form", "merge"]  # the other's history, and the merge's change
    with pytest.raises(ValidationFailed):
        merge_leads(owner.workspace_id, keep, keep)


def test_api_lead_detail_edit_and_delete(api: Api, owner: factories.Person) -> None:
    created = api.post("/leads", {"phone": "(11) 98765-4321", "name": "Ana", "tags": ["VIP"], "opt_in": True})
    assert created.status_code == 201
    lead_id = created.json["id"]
    body = api.get(f"/leads/{lead_id}").json
    assert body["phone"] == "+5511987654321" and body["source"] == "api" and body["tags"] == ["VIP"]
    assert [e.source for e in db.session.scalars(select(ConsentEvent))] == ["api"]
    edited = api.patch(f"/leads/{lead_id}", {"name": "Ana Souza", "email": "ana@x.com", "tags": []})
    assert edited.status_code == 200 and edited.json["name"] == "Ana Souza" and edited.json["tags"] == []
    for bad, code in (
        ({"phone": "nope"}, "invalid_phone"),
        ({"email": "nope"}, "invalid_email"),
        ({"opt_in": "yes"}, "invalid_body"),
        ({"tags": "vip"}, "invalid_tags"),
        ({"name": 3}, "invalid_body"),
    ):
        response = api.patch(f"/leads/{lead_id}", bad)
        assert response.status_code == 422 or response.status_code == 400, bad
        assert response.json["error"]["code"] == code
    assert api.client.delete(f"/api/v1/leads/{lead_id}", headers=api.headers).status_code == 204
    assert api.get(f"/leads/{lead_id}").status_code == 404
    assert api.get("/leads").json["data"] == []
    assert api.get("/leads/999999").status_code == 404


def test_export_escapes_formulas_but_not_phones(api: Api, owner: factories.Person) -> None:
    factories.lead(
        owner, "+5511987654321", '=HYPERLINK("http://evil")', tags=("@vip", "cliente"), opt_in=True
    )
    factories.lead(owner, "+5511911112222", "-2+3", email="bia@x.com")
    factories.lead(owner, "+5511933334444", "Caio", tags=("outro",))
    response = api.get("/leads/export?opt_in=true")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.data.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    assert rows == [
        ["phone", "name", "email", "opt_in", "tags"],
        ["+5511987654321", '\'=HYPERLINK("http://evil")', "", "true", "'@vip,cliente"],
    ]
    everyone = list(csv.reader(io.StringIO(api.get("/leads/export").data.decode("utf-8-sig"))))
    assert ["+5511911112222", "'-2+3", "bia@x.com", "false", ""] in everyone and len(everyone) == 4
    assert api.get("/leads/export?tag=OUTRO").data.decode("utf-8-sig").count("\n") == 2


def test_lists_and_exports_never_leak_another_workspace(api: Api, owner: factories.Person) -> None:
    other = factories.person("Other", "other@example.com", role="owner")
    theirs = factories.lead(other, "+5511987654321", "Theirs")
    assert api.get("/leads").json["data"] == [] and api.get("/leads?q=Theirs").json["data"] == []
    assert api.get(f"/leads/{theirs}").status_code == 404
    assert api.patch(f"/leads/{theirs}", {"name": "Mine"}).status_code == 404
    rows = list(csv.reader(io.StringIO(api.get("/leads/export").data.decode("utf-8-sig"))))
    assert rows == [["phone", "name", "email", "opt_in", "tags"]]


def test_a_tag_whose_folded_form_is_too_long_is_refused(api: Api, owner: factories.Person) -> None:
    """ "ß" folds to "ss": the stored key would pass the column's 64 characters (a 500 on
    PostgreSQL) if only the name were measured."""
    response = api.post("/leads", {"phone": "+5511987654321", "tags": ["ß" * 40]})
    assert response.status_code == 422 and response.json["error"]["code"] == "invalid_tags"
    assert api.get("/leads").json["data"] == []


@pytest.mark.parametrize("value", ["\x00", "\ud800", "x" * 1001])
def test_a_cursor_with_text_a_database_cannot_compare_is_refused(
    logged_in: object, owner: factories.Person, value: str
) -> None:
    import base64
    import json

    raw = json.dumps([value, 1]).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    for path in ("/leads/", "/leads/rows"):
        response = logged_in.get(f"{path}?sort=name&cursor={cursor}")  # type: ignore[attr-defined]
        assert response.status_code in (400, 422), path


@pytest.mark.parametrize("real_queue", ["sqlite"], indirect=True)
def test_delete_forever_runs_in_a_task_not_in_the_request(real_queue: str, owner: factories.Person) -> None:
    from crm.leads.trash import purge_trashed_later
    from crm.worker import huey

    trashed, kept = factories.lead(owner, "+5511988887777"), factories.lead(owner, "+5511988886666")
    trash_leads(owner.workspace_id, [trashed])
    assert purge_trashed_later(owner.workspace_id, [trashed, kept, 999_999]) == 1  # only the trash's
    assert db.session.get(Lead, trashed) is not None  # nothing deleted yet
    task = huey.dequeue()
    assert task is not None
    huey.execute(task)
    db.session.expire_all()
    assert db.session.get(Lead, trashed) is None and db.session.get(Lead, kept) is not None
