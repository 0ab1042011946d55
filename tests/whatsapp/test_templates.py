"""Cloud API templates: synced from the WABA through the Graph API emulator, offered when the
24-hour window is closed, filled in and sent through the outbox."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Message
from crm.leads.models import Lead
from crm.whatsapp import templates
from crm.whatsapp.models import MessageTemplate, WhatsAppAccount
from tests import factories
from tests.conftest import csrf_from
from tests.fakes.graph_api import GraphEmulator
from tests.whatsapp.conftest import make_cloud_account


@pytest.fixture
def closed_conversation(cloud_account: WhatsAppAccount) -> int:
    """A customer who last wrote 2 days ago."""
    conversation_id = factories.inbound(cloud_account.id, name="Marina Souza")
    for message in db.session.scalars(select(Message).where(Message.conversation_id == conversation_id)):
        message.created_at = utcnow() - timedelta(days=2)
    db.session.commit()
    return conversation_id


def _sync(graph: GraphEmulator, account: WhatsAppAccount) -> dict[str, MessageTemplate]:
    templates.sync_templates(account)
    return {t.name: t for t in templates.list_templates(account.workspace_id, account.id)}


def test_sync_follows_the_paging_and_drops_templates_that_are_gone(
    cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    for n in range(130):
        graph_api.add_template(f"aviso_{n:03d}", "Olá {{1}}, seu pedido {{2}} saiu.")
    assert templates.sync_templates(cloud_account) == 130
    listing = [r for r in graph_api.requests if r.path.endswith("/message_templates")]
    assert len(listing) == 2  # 100 + 30
    assert all(r.headers.get("Authorization") == "Bearer test-token" for r in listing)
    assert all("access_token" not in r.query for r in listing)  # never in a URL that could be logged
    assert listing[1].query.get("after")
    del graph_api.templates[100:]
    assert templates.sync_templates(cloud_account) == 100
    assert db.session.scalar(select(func.count()).select_from(MessageTemplate)) == 100


def test_which_templates_the_inbox_can_send(cloud_account: WhatsAppAccount, graph_api: GraphEmulator) -> None:
    graph_api.add_template("pedido", "Olá {{1}}, seu pedido {{2}} saiu.")
    graph_api.add_template("boas_vindas", "Oi {{nome}}! Bem-vindo.")
    graph_api.add_template("pendente", "Oi", status="PENDING")
    graph_api.add_template("com_foto", "Veja {{1}}", header={"format": "IMAGE"})
    synced = _sync(graph_api, cloud_account)
    assert {t.name for t in templates.sendable_templates(cloud_account.workspace_id, cloud_account.id)} == {
        "pedido",
        "boas_vindas",
    }
    assert templates.body_params(synced["pedido"]) == ["1", "2"]
    assert templates.body_params(synced["boas_vindas"]) == ["nome"]


def test_a_number_without_a_waba_id_says_what_is_missing(
    logged_in: FlaskClient, owner: factories.Person, graph_api: GraphEmulator
) -> None:
    account = make_cloud_account(owner, graph_api)
    account.settings = {**account.settings, "waba_id": ""}
    db.session.commit()
    form = {"csrf_token": csrf_from(logged_in, f"/settings/numbers/{account.id}")}
    assert logged_in.post(f"/settings/numbers/{account.id}/templates/sync", data=form).status_code == 302
    assert "WABA id" in logged_in.get(f"/settings/numbers/{account.id}").get_data(as_text=True)


def test_the_number_page_syncs_and_lists_templates(
    logged_in: FlaskClient, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    graph_api.add_template("pedido", "Olá {{1}}")
    form = {"csrf_token": csrf_from(logged_in, f"/settings/numbers/{cloud_account.id}")}
    assert (
        logged_in.post(f"/settings/numbers/{cloud_account.id}/templates/sync", data=form).status_code == 302
    )
    page = logged_in.get(f"/settings/numbers/{cloud_account.id}").get_data(as_text=True)
    assert "Templates are being synced" in page and "<code>pedido</code>" in page


def test_the_closed_window_composer_sends_a_filled_template(
    logged_in: FlaskClient,
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    closed_conversation: int,
) -> None:
    graph_api.add_template("pedido", "Olá {{1}}, seu pedido {{2}} saiu.")
    template = _sync(graph_api, cloud_account)["pedido"]
    thread = logged_in.get(f"/conversations/{closed_conversation}").get_data(as_text=True)
    assert (
        "24-hour window is closed" in thread and "pedido (pt_BR)" in thread and "data-composer" not in thread
    )
    fields = logged_in.get(
        f"/conversations/{closed_conversation}/template", query_string={"template_id": template.id}
    ).get_data(as_text=True)
    assert 'name="param-1"' in fields and 'name="param-2"' in fields and "seu pedido {{2}} saiu" in fields

    url = f"/conversations/{closed_conversation}/template"
    form = {
        "csrf_token": csrf_from(logged_in, "/"),
        "template_id": str(template.id),
        "param-1": "Marina",
        "param-2": "#123",
        "send_key": "k1",
    }
    assert logged_in.post(url, data=form).status_code == 200
    assert logged_in.post(url, data=form).status_code == 200  # a double click: one message
    sent = db.session.scalars(select(Message).where(Message.direction == "out")).all()
    assert [(m.type, m.text, m.status) for m in sent] == [
        ("template", "Olá Marina, seu pedido #123 saiu.", "sent")
    ]
    assert len(graph_api.sent) == 1
    assert graph_api.sent[0].json["template"] == {
        "name": "pedido",
        "language": {"code": "pt_BR"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Marina"}, {"type": "text", "text": "#123"}],
            }
        ],
    }


def test_named_variables_are_sent_by_name(
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    closed_conversation: int,
    owner: factories.Person,
) -> None:
    from crm.inbox.sending import send_template

    graph_api.add_template("boas_vindas", "Oi {{nome}}!")
    template = _sync(graph_api, cloud_account)["boas_vindas"]
    send_template(
        owner.workspace_id, closed_conversation, template.id, {"nome": "Marina"}, user_id=owner.user_id
    )
    assert graph_api.sent[0].json["template"]["components"] == [
        {"type": "body", "parameters": [{"type": "text", "text": "Marina", "parameter_name": "nome"}]}
    ]


def test_bad_template_sends_change_nothing(
    logged_in: FlaskClient,
    owner: factories.Person,
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    closed_conversation: int,
) -> None:
    graph_api.add_template("pedido", "Olá {{1}}")
    template = _sync(graph_api, cloud_account)["pedido"]
    other = make_cloud_account(owner, graph_api, phone_number_id="999", name="Other")
    graph_api.templates.clear()
    graph_api.add_template("outro", "Oi")
    foreign = _sync(graph_api, other)["outro"]
    url = f"/conversations/{closed_conversation}/template"
    csrf = csrf_from(logged_in, "/")
    cases = [
        ({"template_id": str(template.id), "param-1": "  "}, 422),  # a variable left empty
        ({"template_id": str(template.id), "param-1": "x" * 1025}, 422),
        ({"template_id": ""}, 422),
        ({"template_id": str(foreign.id)}, 422),  # another number's template
        ({"template_id": "99999"}, 404),
    ]
    for fields, status in cases:
        assert logged_in.post(url, data={"csrf_token": csrf, **fields}).status_code == status, fields
    assert db.session.scalar(select(func.count()).select_from(Message).where(Message.direction == "out")) == 0


def test_a_template_deleted_in_whatsapp_manager_fails_with_metas_reason(
    owner: factories.Person,
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    closed_conversation: int,
) -> None:
    from crm.inbox.sending import send_template

    graph_api.add_template("pedido", "Olá {{1}}")
    graph_api.add_template("outro", "Oi")
    template = _sync(graph_api, cloud_account)["pedido"]
    del graph_api.templates[0]  # gone on Meta's side since the last sync
    queued = send_template(
        owner.workspace_id, closed_conversation, template.id, {"1": "Ana"}, user_id=owner.user_id
    )
    message = db.session.get(Message, queued.message.id)
    assert message is not None and message.status == "failed" and message.error_code == "132001"


def test_an_unreadable_template_list_is_a_clear_error(
    cloud_account: WhatsAppAccount, graph_api: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm.whatsapp.providers.base import ProviderError

    monkeypatch.setattr(graph_api, "_list_templates", lambda request: (200, {}, b"<html>oops</html>"))
    with pytest.raises(ProviderError) as raised:
        templates.sync_templates(cloud_account)
    assert raised.value.code == "bad_response"


def test_the_lead_page_writes_first_with_a_template_outside_the_window(
    logged_in: FlaskClient,
    owner: factories.Person,
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
) -> None:
    """An imported lead never wrote: on a Cloud API number only a template can start the chat."""
    from crm.inbox.models import Conversation

    template = _sync(graph_api, _with_template(graph_api, cloud_account))["pedido"]
    lead_id = factories.lead(owner, "+5511987654321", "Ana")
    page = logged_in.get(f"/leads/{lead_id}").get_data(as_text=True)
    assert "have not written to Cloud in the last 24 hours" in page and "pedido (pt_BR)" in page
    assert f'id="lead-message-text-{lead_id}"' not in page

    def post(**form: str) -> tuple[int, str]:
        data = {"csrf_token": csrf_from(logged_in, "/leads/new"), **form}
        response = logged_in.post(f"/leads/{lead_id}/messages", data=data, headers={"HX-Request": "true"})
        return response.status_code, response.get_data(as_text=True)

    status, html = post(text="Oi Ana!")  # free text would be refused by WhatsApp (131047): not queued
    assert status == 409 and "only accepts an approved template" in html and "pedido (pt_BR)" in html
    assert db.session.scalar(select(func.count()).select_from(Conversation)) == 0
    status, html = post(template_id="")
    assert status == 422 and "Choose a template." in html
    status, html = post(template_id=str(template.id), **{"param-1": "Ana", "param-2": "   "})
    assert status == 422 and 'href="/conversations/' not in html  # no conversation made for it
    assert db.session.scalar(select(func.count()).select_from(Conversation)) == 0
    other = factories.person(workspace="Outra", email="other@outra.example")
    elsewhere = make_cloud_account(other, graph_api, phone_number_id="999888777", name="Deles")
    assert logged_in.get(f"/leads/{lead_id}/first-message?account_id={elsewhere.id}").status_code == 404

    assert f"/leads/{lead_id}/template?account_id={cloud_account.id}" in page  # the number in the form
    chosen = {"template_id": template.id, "account_id": cloud_account.id}
    fields = logged_in.get(f"/leads/{lead_id}/template", query_string=chosen)
    assert 'name="param-1"' in fields.get_data(as_text=True)
    form = {"template_id": str(template.id), "param-1": "Ana", "param-2": "#7", "send_key": "k1"}
    assert post(**form)[0] == 200
    status, html = post(**form)  # a double click: one message
    assert status == 200 and "Message queued." in html
    sent = db.session.scalars(select(Message).where(Message.direction == "out")).all()
    assert [(m.type, m.text, m.status, m.author) for m in sent] == [
        ("template", "Olá Ana, seu pedido #7 saiu.", "sent", "agent")
    ]
    assert len(graph_api.sent) == 1 and graph_api.sent[0].json["to"] == "5511987654321"
    another = make_cloud_account(owner, graph_api, phone_number_id="111222333", name="Outro")
    mismatched = {"template_id": template.id, "account_id": another.id}
    assert logged_in.get(f"/leads/{lead_id}/template", query_string=mismatched).status_code == 404


def test_the_lead_page_offers_text_where_the_window_is_open(
    logged_in: FlaskClient,
    owner: factories.Person,
    cloud_account: WhatsAppAccount,
    sandbox_account: WhatsAppAccount,
    graph_api: GraphEmulator,
) -> None:
    _sync(graph_api, _with_template(graph_api, cloud_account))
    factories.inbound(cloud_account.id, phone="+5511987654321", name="Ana", text="Oi, ainda tem?")
    lead_id = factories.lead(owner, "+5511911112222", "Bia")  # never wrote

    def body(lead: int, account: WhatsAppAccount | None) -> str:
        query = {"account_id": account.id} if account else {}
        return logged_in.get(f"/leads/{lead}/first-message", query_string=query).get_data(as_text=True)

    assert "pedido (pt_BR)" in body(lead_id, cloud_account)
    assert 'name="text"' in body(lead_id, sandbox_account)  # the sandbox has no 24-hour rule
    ana_id = db.session.scalar(select(Lead.id).where(Lead.phone == "+5511987654321"))
    assert ana_id is not None and 'name="text"' in body(ana_id, None)  # she just wrote: text goes
    page = logged_in.get(f"/leads/{lead_id}").get_data(as_text=True)
    assert f'hx-get="/leads/{lead_id}/first-message"' in page  # choosing another number redraws it


def _with_template(graph: GraphEmulator, account: WhatsAppAccount) -> WhatsAppAccount:
    graph.add_template("pedido", "Olá {{1}}, seu pedido {{2}} saiu.")
    return account
