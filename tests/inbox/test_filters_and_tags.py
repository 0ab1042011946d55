"""The conversation list's filters and search, and tags on the customer from the thread."""

from __future__ import annotations

from flask.testing import FlaskClient

from crm.extensions import db
from crm.inbox.models import Conversation
from crm.leads.models import Lead
from tests import factories
from tests.conftest import hx


def _names(client: FlaskClient, **query: str) -> list[str]:
    html = client.get("/", query_string=query).get_data(as_text=True)
    return [name for name in ("Ana", "Bia", "Caio", "Érica") if f'<span class="who">{name}</span>' in html]


def _tag(conversation_id: int, *names: str) -> None:
    from crm.inbox import services as inbox

    conversation = db.session.get(Conversation, conversation_id)
    assert conversation is not None
    for name in names:
        inbox.tag_lead(conversation.workspace_id, conversation_id, name)


def test_filter_by_number_and_by_tag(logged_in: FlaskClient, owner: factories.Person) -> None:
    first = factories.sandbox_account(owner, name="Loja")
    second = factories.sandbox_account(owner, name="Suporte")
    ana = factories.inbound(first, phone="+5511900000001", name="Ana")
    factories.inbound(second, phone="+5511900000002", name="Bia")
    _tag(ana, "VIP")
    assert _names(logged_in) == ["Ana", "Bia"]
    assert _names(logged_in, account=str(second)) == ["Bia"]
    assert _names(logged_in, tag="vip") == ["Ana"]  # tags match whatever the case
    assert _names(logged_in, tag="nope") == []
    assert _names(logged_in, account="not-a-number") == ["Ana", "Bia"]  # odd input: no filter


def test_search_finds_names_phones_and_message_text(logged_in: FlaskClient, owner: factories.Person) -> None:
    account_id = factories.sandbox_account(owner)
    factories.inbound(account_id, phone="+5511900000001", name="Ana", text="Quero o boleto")
    factories.inbound(account_id, phone="+5511977770002", name="Bia", text="Oi")
    factories.inbound(account_id, phone="+5511900000003", name="Caio", text="100% de desconto?")
    assert _names(logged_in, q="bia") == ["Bia"]
    assert _names(logged_in, q="7777") == ["Bia"]
    assert _names(logged_in, q="BOLETO") == ["Ana"]
    assert _names(logged_in, q="0% d") == ["Caio"]  # % is matched literally
    assert _names(logged_in, q="o_b") == []  # and so is _
    nothing = logged_in.get("/", query_string={"q": "nobody"}).get_data(as_text=True)
    assert "No conversations match this search and these filters." in nothing and "yet" not in nothing
    for narrowed in ({"view": "mine"}, {"status": "closed"}):  # none assigned to me, none closed
        html = logged_in.get("/", query_string=narrowed).get_data(as_text=True)
        assert "No conversations match this search and these filters." in html, narrowed
    factories.inbound(account_id, phone="+5511900000004", name="Érica", text="ÓTIMO atendimento, Ângela!")
    assert _names(logged_in, q="érica") == _names(logged_in, q="ÉRICA") == ["Érica"]  # any letter's case
    assert _names(logged_in, q="ótimo") == _names(logged_in, q="ângela") == ["Érica"]
    assert _names(logged_in, q="erica") == ["Érica"]  # a name, accents aside too


def test_tags_are_added_and_removed_from_the_thread(logged_in: FlaskClient, owner: factories.Person) -> None:
    conversation_id = factories.inbound(factories.sandbox_account(owner), name="Ana")
    assert hx(logged_in, "POST", f"/conversations/{conversation_id}/tags", tag="  Cliente   VIP ") == 200
    assert (
        hx(logged_in, "POST", f"/conversations/{conversation_id}/tags", tag="cliente vip") == 200
    )  # no twin
    assert hx(logged_in, "POST", f"/conversations/{conversation_id}/tags", tag="Atacado") == 200
    lead = db.session.scalar(db.select(Lead))
    assert lead is not None and sorted(lead.tag_names) == ["Atacado", "Cliente VIP"]
    assert hx(logged_in, "POST", f"/conversations/{conversation_id}/tags", tag="   ") == 422
    assert hx(logged_in, "POST", f"/conversations/{conversation_id}/tags", tag="x" * 65) == 422
    assert hx(logged_in, "POST", f"/conversations/{conversation_id}/tags/remove", tag="CLIENTE VIP") == 200
    db.session.refresh(lead)
    assert lead.tag_names == ["Atacado"]
    html = logged_in.get(f"/conversations/{conversation_id}").get_data(as_text=True)
    assert '<li class="tag">Atacado' in html


def test_views_mine_unassigned_and_unread(logged_in: FlaskClient, owner: factories.Person) -> None:
    from crm.inbox import services as inbox

    colleague = factories.person("Acme", "colega@acme.example")
    account_id = factories.sandbox_account(owner)
    ana = factories.inbound(account_id, phone="+5511900000001", name="Ana")
    bia = factories.inbound(account_id, phone="+5511900000002", name="Bia")
    factories.inbound(account_id, phone="+5511900000003", name="Caio")
    inbox.take(owner.workspace_id, ana, owner.user_id)
    inbox.assign(owner.workspace_id, bia, colleague.user_id)
    assert logged_in.get(f"/conversations/{ana}").status_code == 200  # read: its badge goes
    assert _names(logged_in, view="all") == ["Ana", "Bia", "Caio"]
    assert _names(logged_in, view="mine") == ["Ana"]
    assert _names(logged_in, view="unassigned") == ["Caio"]
    assert _names(logged_in, view="unread") == ["Bia", "Caio"]
    assert _names(logged_in, view="mine", status="closed") == []
    inbox.set_status(owner.workspace_id, ana, "closed")
    assert _names(logged_in, view="mine", status="closed") == ["Ana"]
    assert _names(logged_in, view="mine") == []
    assert _names(logged_in, view="somebody-else") == ["Bia", "Caio"]  # odd input: every open one
