"""The leads list in the browser's terms: search, filters, sorts, keyset pages, the capped count,
bulk actions and who may run them, the CSV export of the current filter, the trash."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient
from sqlalchemy import insert, select

from crm.auth.models import User
from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Conversation
from crm.leads.models import ConsentEvent, Lead
from crm.whatsapp.models import WhatsAppAccount
from tests import factories
from tests.conftest import csrf_from

ROW_ID = re.compile(r'<tr id="lead-(\d+)" class="lead-row">')
MORE = re.compile(r'<tr id="lead-more"[^>]*hx-get="([^"]+)"')


def row_ids(html: str) -> list[int]:
    return [int(found) for found in ROW_ID.findall(html)]


def listed(client: FlaskClient, query: str = "") -> list[int]:
    response = client.get(f"/leads/{query}")
    assert response.status_code == 200
    return row_ids(response.get_data(as_text=True))


def bulk(client: FlaskClient, action: str, ids: list[int], **form: str) -> str:
    """Post a bulk action as the list's form does; the page it lands on after the redirect."""
    data = {"csrf_token": csrf_from(client, "/leads/"), "lead_id": [str(i) for i in ids], **form}
    response = client.post(f"/leads/bulk/{action}", data=data)
    assert response.status_code == 303, response.status_code
    return client.get(response.headers["Location"]).get_data(as_text=True)


def test_the_list_shows_each_lead_with_its_columns(logged_in: FlaskClient, owner: factories.Person) -> None:
    maria = factories.lead(owner, "+5511988887777", "Maria", opt_in=True, tags=("VIP", "atacado"))
    html = logged_in.get("/leads/").get_data(as_text=True)
    row = html[html.index(f'<tr id="lead-{maria}"') :].split("</tr>")[0]
    assert f'href="/leads/{maria}"' in row and "Maria" in row
    assert "+55 11 98888-7777" in row  # formatted for humans
    assert "VIP" in row and "atacado" in row and "Opted in" in row and "Added by hand" in row
    assert 'name="lead_id"' in row and 'form="lead-bulk"' in row
    assert 'href="/leads/new"' in html and 'href="/leads/trash"' in html


@pytest.mark.parametrize("query", ["ana", "ANA SOUZA", "98765-4321", "(11) 98765-4321", "ana@ex", "padaria"])
def test_search_finds_name_phone_email_and_notes(
    logged_in: FlaskClient, owner: factories.Person, query: str
) -> None:
    ana = factories.lead(owner, "+5511987654321", "Ana Souza", email="ana@example.com", notes="Padaria")
    factories.lead(owner, "+5511911112222", "Bruno")
    assert listed(logged_in, f"?q={query}") == [ana]


def test_filters_by_tag_consent_source_and_last_contact(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    from crm.leads.consent import ConsentChange, set_consent
    from crm.leads.models import ConsentSource

    account = factories.sandbox_account(owner)
    tagged = factories.lead(owner, "+5511900000001", "Tagged", opt_in=True, tags=("Atacado",))
    out = factories.lead(owner, "+5511900000002", "Out", opt_in=True)
    set_consent(owner.workspace_id, [out], False, ConsentChange(ConsentSource.FORM))
    never = factories.lead(owner, "+5511900000003", "Never")
    factories.inbound(account, phone="+5511900000004")
    wrote = db.session.scalar(select(Lead.id).where(Lead.phone == "+5511900000004"))
    factories.inbound(account, phone="+5511900000005")
    long_ago = db.session.scalar(select(Lead.id).where(Lead.phone == "+5511900000005"))
    conversation = db.session.scalar(select(Conversation).where(Conversation.lead_id == long_ago))
    assert conversation is not None
    conversation.last_message_at = utcnow() - timedelta(days=45)
    db.session.commit()

    assert listed(logged_in, "?tag=atacado") == [tagged]  # tags match case-insensitively
    assert listed(logged_in, "?consent=in") == [tagged]
    assert listed(logged_in, "?consent=out") == [out]
    assert set(listed(logged_in, "?consent=none")) == {never, wrote, long_ago}
    assert set(listed(logged_in, "?source=inbound")) == {wrote, long_ago}
    assert listed(logged_in, "?contact=7") == [wrote]
    assert set(listed(logged_in, "?contact=90")) == {wrote, long_ago}
    assert set(listed(logged_in, "?contact=not30")) == {tagged, out, never, long_ago}
    assert set(listed(logged_in, "?contact=not90")) == {tagged, out, never}
    assert listed(logged_in, "?tag=atacado&consent=out") == []
    # A hand-edited URL with values the list doesn't know is the unfiltered list, not an error.
    assert len(listed(logged_in, "?consent=maybe&source=fax&contact=5&sort=random")) == 5


def test_sorts(logged_in: FlaskClient, owner: factories.Person) -> None:
    carla = factories.lead(owner, "+5511900000001", "Carla")
    ana = factories.lead(owner, "+5511900000002", "Ana")
    bia = factories.lead(owner, "+5511900000003", "Bia")
    assert listed(logged_in) == [bia, ana, carla]  # newest first
    assert listed(logged_in, "?sort=oldest") == [carla, ana, bia]
    assert listed(logged_in, "?sort=name") == [ana, bia, carla]
    assert listed(logged_in, "?sort=-name") == [carla, bia, ana]


@pytest.mark.parametrize("sort", ["name", "-name", "oldest", ""])
def test_load_more_follows_the_keyset_cursor_across_equal_names(
    logged_in: FlaskClient, owner: factories.Person, sort: str
) -> None:
    ids = [factories.lead(owner, f"+55119000000{i:02d}", "Same" if i % 3 else "Other") for i in range(11)]
    html = logged_in.get(f"/leads/?sort={sort}&limit=3").get_data(as_text=True)
    seen = row_ids(html)
    pages = 1
    while more := MORE.search(html):
        url = unescape(more.group(1))
        assert "cursor=" in url and "offset" not in url and "limit=3" in url
        html = logged_in.get(url, headers={"HX-Request": "true"}).get_data(as_text=True)
        assert "<html" not in html
        seen += row_ids(html)
        pages += 1
    assert pages == 4 and len(seen) == len(set(seen)) == 11 and set(seen) == set(ids)
    names = [db.session.get(Lead, i).name for i in seen]  # type: ignore[union-attr]
    if sort == "name":
        assert names == sorted(names)
    elif sort == "-name":
        assert names == sorted(names, reverse=True)


def test_a_page_of_rows_costs_the_same_for_3_or_30_leads(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    from tests.inbox.test_query_counts import counted

    def statements() -> int:
        with counted() as seen:
            assert logged_in.get("/leads/", headers={"HX-Request": "true"}).status_code == 200
        return len(seen)

    for i in range(3):
        factories.lead(owner, f"+5511900000{i:03d}", tags=("vip", "atacado"))
    few = statements()
    for i in range(3, 30):
        factories.lead(owner, f"+5511900000{i:03d}", tags=("vip",))
    assert statements() == few <= 8


def test_the_load_more_link_works_without_javascript(logged_in: FlaskClient, owner: factories.Person) -> None:
    for i in range(3):
        factories.lead(owner, f"+5511900000{i:03d}")
    html = logged_in.get("/leads/?limit=2").get_data(as_text=True)
    link = re.search(r'<a href="(/leads/\?cursor=[^"]+)">Load more</a>', html)
    assert link is not None
    second = logged_in.get(unescape(link.group(1))).get_data(as_text=True)
    assert len(row_ids(second)) == 1 and "Back to the first page" in second


def test_the_count_is_lazy_and_capped(logged_in: FlaskClient, owner: factories.Person) -> None:
    html = logged_in.get("/leads/?consent=in").get_data(as_text=True)
    assert 'hx-get="/leads/count?consent=in" hx-trigger="load"' in html
    assert "0 leads" in logged_in.get("/leads/count").get_data(as_text=True)
    factories.lead(owner, "+5511900000001", opt_in=True)
    assert ">1 lead<" in logged_in.get("/leads/count").get_data(as_text=True)
    now = utcnow()
    db.session.execute(
        insert(Lead),
        [
            {"workspace_id": owner.workspace_id, "phone": f"+55219{i:08d}", "name": f"Lead {i}", "notes": ""}
            | {"created_at": now, "updated_at": now, "opt_in": False, "source": "import", "kind": "person"}
            for i in range(1000)
        ],
    )
    db.session.commit()
    assert ">1,000+ leads<" in logged_in.get("/leads/count").get_data(as_text=True)
    assert ">1 lead<" in logged_in.get("/leads/count?consent=in").get_data(as_text=True)
    assert ">1,000 leads<" in logged_in.get("/leads/count?source=import").get_data(as_text=True)


def test_htmx_gets_the_results_fragment_and_a_boosted_request_the_page(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    ana = factories.lead(owner, "+5511900000001", "Ana")
    factories.lead(owner, "+5511900000002", "Bruno")
    fragment = logged_in.get("/leads/?q=ana", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert fragment.lstrip().startswith('<div id="lead-results"') and "<html" not in fragment
    assert row_ids(fragment) == [ana]
    assert 'href="/leads/export.csv?q=ana"' in fragment  # the export follows the search
    assert 'name="back" value="q=ana"' in fragment  # and so does the page a bulk action returns to
    boosted = logged_in.get("/leads/?q=ana", headers={"HX-Request": "true", "HX-Boosted": "true"})
    assert "<html" in boosted.get_data(as_text=True)
    page = logged_in.get("/leads/?q=ana").get_data(as_text=True)
    assert 'hx-push-url="true"' in page and 'value="ana"' in page


def test_bulk_tag_untag_and_opt_out_by_an_agent(agent: FlaskClient, owner: factories.Person) -> None:
    ana = factories.lead(owner, "+5511900000001", "Ana", opt_in=True, tags=("vip",))
    bia = factories.lead(owner, "+5511900000002", "Bia")
    untouched = factories.lead(owner, "+5511900000003", "Caio")
    duda = factories.lead(owner, "+5511900000004", "Duda")

    html = bulk(agent, "tag", [ana, bia, duda], tag="VIP", back="q=a&sort=name")
    assert "Tag added to 2 leads." in html  # Ana had it already
    for tagged in (bia, duda):
        assert [t.casefold() for t in db.session.get(Lead, tagged).tag_names] == ["vip"]  # type: ignore[union-attr]
    assert db.session.get(Lead, untouched).tag_names == []  # type: ignore[union-attr]

    html = bulk(agent, "untag", [ana, bia], tag="vip")
    assert "Tag removed from 2 leads." in html
    assert db.session.scalars(select(Lead).where(Lead.id.in_([ana, bia]))).all()[0].tag_names == []

    html = bulk(agent, "opt-out", [ana, bia])
    assert "2 leads opted out." in html
    events = db.session.scalars(select(ConsentEvent).where(ConsentEvent.opted_in.is_(False))).all()
    agent_id = db.session.scalar(select(User.id).where(User.email == "agent@acme.example"))
    assert {(e.lead_id, e.source, e.user_id) for e in events} == {
        (ana, "form", agent_id),
        (bia, "form", agent_id),
    }


def test_a_bulk_action_returns_to_the_filtered_list(logged_in: FlaskClient, owner: factories.Person) -> None:
    ana = factories.lead(owner, "+5511900000001", "Ana")
    data = {"csrf_token": csrf_from(logged_in, "/leads/"), "lead_id": str(ana), "tag": "x"}
    for back, location in [
        ("q=ana&sort=name&cursor=abc", "/leads/?q=ana&sort=name"),  # no stale cursor
        ("next=https://evil.example/", "/leads/"),  # nothing but the list's own filters
    ]:
        response = logged_in.post("/leads/bulk/tag", data={**data, "back": back})
        assert response.status_code == 303 and response.headers["Location"] == location


def test_bulk_mistakes_are_flashed_and_change_nothing(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    ana = factories.lead(owner, "+5511900000001", "Ana")
    assert "Select at least one lead first." in bulk(logged_in, "tag", [], tag="vip")
    assert "Type the tag." in bulk(logged_in, "tag", [ana], tag="   ")
    assert "at most 64 characters" in bulk(logged_in, "tag", [ana], tag="x" * 65)
    assert db.session.get(Lead, ana).tag_names == []  # type: ignore[union-attr]
    refused = logged_in.post("/leads/bulk/tag", data={"lead_id": str(ana), "tag": "vip"})  # no CSRF token
    assert refused.status_code == 400


def test_only_managers_move_leads_to_the_trash(agent: FlaskClient, owner: factories.Person) -> None:
    ana = factories.lead(owner, "+5511900000001", "Ana")
    html = agent.get("/leads/").get_data(as_text=True)
    assert "/leads/bulk/trash" not in html and "/leads/export.csv" not in html and "/leads/trash" not in html
    token = csrf_from(agent, "/leads/")
    assert agent.post("/leads/bulk/trash", data={"csrf_token": token, "lead_id": str(ana)}).status_code == 403
    assert agent.post(f"/leads/{ana}/trash", data={"csrf_token": token}).status_code == 403
    for path in ("/leads/trash", "/leads/export.csv"):
        assert agent.get(path).status_code == 403
    for path in ("/leads/trash/restore", "/leads/trash/purge"):
        assert agent.post(path, data={"csrf_token": token, "lead_id": str(ana)}).status_code == 403
    assert db.session.get(Lead, ana).deleted_at is None  # type: ignore[union-attr]


def test_the_trash_restore_and_delete_forever(logged_in: FlaskClient, owner: factories.Person) -> None:
    ana = factories.lead(owner, "+5511900000001", "Ana")
    bia = factories.lead(owner, "+5511900000002", "Bia")
    assert "2 leads moved to the trash." in bulk(logged_in, "trash", [ana, bia])
    assert listed(logged_in) == []
    trash = logged_in.get("/leads/trash").get_data(as_text=True)
    assert set(row_ids(trash)) == {ana, bia}
    deleted = db.session.get(Lead, ana).deleted_at  # type: ignore[union-attr]
    assert deleted is not None
    purge_day = (deleted + timedelta(days=30)).astimezone(ZoneInfo("America/Sao_Paulo"))  # the workspace's
    assert f'{purge_day:%b} {purge_day.day}, {purge_day.year} <span class="muted">(in 1 month)' in trash
    assert row_ids(logged_in.get("/leads/trash?q=bia").get_data(as_text=True)) == [bia]

    token = csrf_from(logged_in, "/leads/trash")
    restored = logged_in.post("/leads/trash/restore", data={"csrf_token": token, "lead_id": str(ana)})
    assert restored.status_code == 303 and restored.headers["Location"] == "/leads/trash"
    assert listed(logged_in) == [ana]
    purged = logged_in.post("/leads/trash/purge", data={"csrf_token": token, "lead_id": [str(bia), str(ana)]})
    assert purged.status_code == 303
    assert "1 lead is being deleted for good." in logged_in.get("/leads/trash").get_data(as_text=True)
    assert db.session.get(Lead, bia) is None and db.session.get(Lead, ana) is not None  # only the trash


def test_the_export_link_exports_the_current_filter_with_formulas_neutralised(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    factories.lead(owner, "+5511900000001", '=HYPERLINK("http://evil.example","Ana")', tags=("vip",))
    factories.lead(owner, "+5511900000002", "-Bia", email="bia@example.com", tags=("vip",))
    factories.lead(owner, "+5511900000003", "Caio")
    html = logged_in.get("/leads/?tag=vip&sort=name", headers={"HX-Request": "true"}).get_data(as_text=True)
    link = re.search(r'id="lead-export" href="([^"]+)"', html)
    assert link is not None and unescape(link.group(1)) == "/leads/export.csv?tag=vip&sort=name"
    response = logged_in.get(unescape(link.group(1)))
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    body = response.get_data(as_text=True)
    assert body.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(body.lstrip("\ufeff"))))
    assert rows[0] == ["phone", "name", "email", "opt_in", "tags"]
    assert sorted(rows[1:]) == [
        ["+5511900000001", '\'=HYPERLINK("http://evil.example","Ana")', "", "false", "vip"],
        ["+5511900000002", "'-Bia", "bia@example.com", "false", "vip"],
    ]


def test_another_workspace_is_invisible(logged_in: FlaskClient, owner: factories.Person) -> None:
    mine = factories.lead(owner, "+5511900000001", "Ana Minha", tags=("vip",))
    other = factories.person("Other", "other@other.example", role="owner")
    theirs = factories.lead(other, "+5511900000002", "Ana Deles", tags=("vip",))
    assert listed(logged_in, "?q=ana") == [mine]
    assert listed(logged_in, "?tag=vip") == [mine]
    assert ">1 lead<" in logged_in.get("/leads/count").get_data(as_text=True)
    assert "Deles" not in logged_in.get("/leads/export.csv").get_data(as_text=True)
    for action in ("tag", "opt-out", "trash"):
        bulk(logged_in, action, [theirs], tag="mine")
    lead = db.session.get(Lead, theirs)
    assert (
        lead is not None
        and lead.tag_names == ["vip"]
        and lead.opted_out_at is None
        and lead.deleted_at is None
    )
    missing = logged_in.get("/leads/2147483647")
    foreign = logged_in.get(f"/leads/{theirs}")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.get_data(as_text=True) == missing.get_data(as_text=True)


def test_groups_are_not_leads(logged_in: FlaskClient, owner: factories.Person) -> None:
    from crm.leads.services import insert_lead_if_new

    group = insert_lead_if_new(owner.workspace_id, None, "120363@g.us", "Família", kind="group")
    db.session.commit()
    assert listed(logged_in) == []
    assert logged_in.get(f"/leads/{group}").status_code == 404


def test_bulk_changes_redraw_the_leads_conversations_in_open_inboxes(
    logged_in: FlaskClient, owner: factories.Person, sandbox_account: WhatsAppAccount
) -> None:
    """Tags and consent show in the inbox: a change made from the leads list reaches open tabs."""
    from crm.realtime import broker

    conversation_id = factories.inbound(sandbox_account.id, phone="+5511988887777", text="Oi")
    lead_id = db.session.scalar(select(Lead.id).where(Lead.phone == "+5511988887777"))
    assert lead_id is not None
    heard: list[dict[str, object]] = []
    unsubscribe = broker.subscribe_local(lambda workspace_id, event: heard.append(event))
    try:
        bulk(logged_in, "tag", [lead_id], tag="VIP")
        bulk(logged_in, "opt-out", [lead_id])
    finally:
        unsubscribe()
    updates = [e for e in heard if e.get("type") == "conversation.updated"]
    assert [e["conversation_id"] for e in updates] == [conversation_id, conversation_id]
