"""Consent: keywords in Portuguese, English and Spanish, the history, and that a lead who said stop
gets nothing (but the confirmation) until they opt in again."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from crm.auth.models import Workspace
from crm.extensions import db
from crm.inbox.models import Conversation, Message
from crm.leads.consent import ConsentChange, consent_history, normalise_keyword, set_consent
from crm.leads.models import ConsentEvent, ConsentSource, Lead
from crm.whatsapp.models import WhatsAppAccount
from crm.whatsapp.outbox import deliver_outbound
from tests import factories
from tests.conftest import csrf_from
from tests.fakes.graph_api import GraphEmulator
from tests.whatsapp.conftest import Api

PHONE = "+5511977776666"


def lead_of(phone: str = PHONE) -> Lead:
    lead = db.session.scalar(select(Lead).where(Lead.phone == phone))
    assert lead is not None
    db.session.refresh(lead)
    return lead


def texts_sent(graph_api: GraphEmulator) -> list[str]:
    return [s.json["text"]["body"] for s in graph_api.sent if s.json.get("type") == "text"]


@pytest.mark.parametrize(
    "written",
    [
        "SAIR",
        "sair",
        "Parar.",
        "STOP",
        "stop!",
        "Cancelar",
        "BAJA",
        "  baja  ",
        "Descadastrar",
        "unsubscribe",
    ],
)
def test_an_opt_out_keyword_opts_out_and_confirms(
    written: str, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    factories.inbound(cloud_account.id, phone=PHONE, text=written)
    lead = lead_of()
    assert lead.opted_out_at is not None and lead.opt_in is False
    (event,) = consent_history(cloud_account.workspace_id, lead.id)
    assert (event.opted_in, event.source, event.detail) == (False, "keyword", normalise_keyword(written))
    # The one message someone who just said stop still gets: the confirmation, in pt_BR by default.
    (confirmation,) = texts_sent(graph_api)
    assert "VOLTAR" in confirmation


@pytest.mark.parametrize("written", ["VOLTAR", "voltar", "Start", "ALTA", "alta."])
def test_an_opt_in_keyword_opts_back_in(
    written: str, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    factories.inbound(cloud_account.id, phone=PHONE, text="SAIR")
    factories.inbound(cloud_account.id, phone=PHONE, text=written)
    lead = lead_of()
    assert lead.opt_in is True and lead.opted_out_at is None and lead.opted_in_at is not None
    history = consent_history(cloud_account.workspace_id, lead.id)
    assert [e.opted_in for e in history] == [True, False]  # newest first
    assert len(texts_sent(graph_api)) == 2 and "SAIR" in texts_sent(graph_api)[1]


@pytest.mark.parametrize(
    "written", ["não quero parar de receber", "stop sending me this", "sairei amanhã", "S A I R", "Olá"]
)
def test_a_sentence_is_not_a_keyword(
    written: str, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    factories.inbound(cloud_account.id, phone=PHONE, text=written)
    lead = lead_of()
    assert lead.opted_out_at is None
    assert consent_history(cloud_account.workspace_id, lead.id) == []
    assert graph_api.sent == []


def test_accents_and_case_do_not_matter() -> None:
    assert normalise_keyword("  Sáir! ") == "SAIR"
    assert normalise_keyword("¡Baja!") == "BAJA"


def test_a_keyword_delivered_twice_changes_and_confirms_once(
    cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    from crm.leads.consent import apply_consent_keyword

    factories.inbound(cloud_account.id, phone=PHONE, text="STOP")
    message_id = db.session.scalar(select(Message.id).where(Message.direction == "in"))
    assert message_id is not None
    assert apply_consent_keyword(cloud_account.workspace_id, message_id) == "unchanged"  # a task retried
    assert db.session.scalar(select(func.count()).select_from(ConsentEvent)) == 1
    assert len(texts_sent(graph_api)) == 1


def test_keywords_are_configurable_per_workspace(
    logged_in: FlaskClient, owner: factories.Person, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    response = logged_in.post(
        "/settings/consent",
        data={
            "csrf_token": csrf_from(logged_in, "/settings/consent"),
            "opt_out_keywords": "chega, Não quero mais",
            "opt_in_keywords": "quero",
            "opt_out_reply": "Ok, paramos.",
            "opt_in_reply": "",
            "trash_days": "10",
        },
    )
    assert response.status_code == 302
    workspace = db.session.get(Workspace, owner.workspace_id)
    assert workspace is not None
    db.session.refresh(workspace)
    assert workspace.opt_out_keywords == "CHEGA, NAO QUERO MAIS" and workspace.trash_days == 10
    factories.inbound(cloud_account.id, phone=PHONE, text="SAIR")  # no longer a keyword here
    assert lead_of().opted_out_at is None
    factories.inbound(cloud_account.id, phone=PHONE, text="não quero mais")
    assert lead_of().opted_out_at is not None
    assert texts_sent(graph_api) == ["Ok, paramos."]


def test_bad_consent_settings_change_nothing(logged_in: FlaskClient, owner: factories.Person) -> None:
    csrf = csrf_from(logged_in, "/settings/consent")
    for data in (
        {"opt_out_keywords": "SAIR", "opt_in_keywords": "sair", "trash_days": "30"},
        {"opt_out_keywords": "x" * 50, "opt_in_keywords": "", "trash_days": "30"},
        {"opt_out_keywords": "SAIR", "opt_in_keywords": "VOLTAR", "trash_days": "0"},
        {"opt_out_keywords": "SAIR", "opt_in_keywords": "VOLTAR", "trash_days": "many"},
    ):
        response = logged_in.post("/settings/consent", data={"csrf_token": csrf, **data})
        assert response.status_code in (400, 422), data
    workspace = db.session.get(Workspace, owner.workspace_id)
    assert workspace is not None and workspace.opt_out_keywords is None and workspace.trash_days == 30


def test_agents_see_but_cannot_change_consent_settings(client: FlaskClient, owner: factories.Person) -> None:
    from tests.conftest import login

    agent = factories.person(  # the same workspace as the owner
        db.session.get(Workspace, owner.workspace_id).name,
        "agent@example.com",  # type: ignore[union-attr]
    )
    login(client, agent.email)
    page = client.get("/settings/consent")
    assert page.status_code == 200 and b"SAIR" in page.data and b"<textarea" not in page.data
    response = client.post(
        "/settings/consent",
        data={
            "csrf_token": csrf_from(client, "/settings/consent"),
            "opt_out_keywords": "",
            "trash_days": "5",
        },
    )
    assert response.status_code == 403


def test_an_opted_out_lead_gets_no_api_message(api: Api, cloud_account: WhatsAppAccount) -> None:
    factories.inbound(cloud_account.id, phone=PHONE, text="SAIR")
    response = api.post("/messages", {"to": PHONE, "text": "Promoção!"})
    assert response.status_code == 409 and response.json["error"]["code"] == "opted_out"
    conversation_id = db.session.scalar(select(Conversation.id))
    response = api.post(f"/conversations/{conversation_id}/messages", {"text": "Oi?"})
    assert response.status_code == 409 and response.json["error"]["code"] == "opted_out"


def test_an_opt_out_while_a_message_waits_cancels_it(
    api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator, owner: factories.Person
) -> None:
    """Consent is checked again at send time: an opt-out that arrives after a message was queued
    (a broadcast running) stops it."""
    from crm.inbox.sending import send_to_phone
    from crm.whatsapp.models import Outbox
    from crm.worker import huey

    huey.immediate = False  # keep the send queued, as in a running broadcast
    try:
        queued = send_to_phone(owner.workspace_id, PHONE, "Oferta", account_id=cloud_account.id)
    finally:
        huey.immediate = True
    set_consent(owner.workspace_id, [lead_of().id], False, ConsentChange(ConsentSource.FORM, owner.user_id))
    row = db.session.scalar(select(Outbox).where(Outbox.message_id == queued.message.id))
    assert row is not None
    assert deliver_outbound(row.id) == "cancelled"
    assert graph_api.sent == []
    message = db.session.get(Message, queued.message.id)
    assert message is not None and message.status == "failed" and message.error_code == "opted_out"


def test_api_opt_out_is_recorded_with_its_source(api: Api, owner: factories.Person) -> None:
    lead_id = factories.lead(owner, PHONE, opt_in=True)
    response = api.patch(f"/leads/{lead_id}", {"opt_in": False})
    assert response.status_code == 200
    assert response.json["opt_in"] is False and response.json["opted_out_at"]
    sources = [(e.opted_in, e.source) for e in consent_history(owner.workspace_id, lead_id)]
    assert sources == [(False, "api"), (True, "form")]


def test_a_second_stop_gets_no_second_reply(cloud_account: WhatsAppAccount, graph_api: GraphEmulator) -> None:
    for _ in range(3):
        factories.inbound(cloud_account.id, phone=PHONE, text="STOP")
    assert len(texts_sent(graph_api)) == 1
    assert db.session.scalar(select(func.count()).select_from(ConsentEvent)) == 1


def test_a_welcome_back_waiting_in_the_queue_is_not_sent_after_a_new_stop(
    cloud_account: WhatsAppAccount, graph_api: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the confirmation of an opt-out may reach someone who opted out."""
    from crm.leads.consent import apply_consent_keyword
    from crm.whatsapp import outbox
    from crm.whatsapp.models import Outbox

    conversation_id = factories.inbound(cloud_account.id, phone=PHONE, text="SAIR")
    monkeypatch.setattr(outbox, "enqueue_delivery_after_commit", lambda outbox_id: None)  # sends wait
    back = factories.stored_message(conversation_id, "VOLTAR")
    assert apply_consent_keyword(cloud_account.workspace_id, back) == "opted_in"
    stop = factories.stored_message(conversation_id, "SAIR")
    assert apply_consent_keyword(cloud_account.workspace_id, stop) == "opted_out"
    monkeypatch.undo()
    welcome, goodbye = db.session.scalars(select(Outbox).where(Outbox.state == "queued").order_by(Outbox.id))
    assert deliver_outbound(welcome.id) == "cancelled"
    deliver_outbound(goodbye.id)
    sent = texts_sent(graph_api)
    assert len(sent) == 2 and all("VOLTAR" in text for text in sent)  # two opt-out confirmations


def test_api_opt_out_of_a_lead_who_never_opted_in_stops_everything(api: Api, owner: factories.Person) -> None:
    lead_id = factories.lead(owner, PHONE)
    response = api.patch(f"/leads/{lead_id}", {"opt_in": False})
    assert response.status_code == 200 and response.json["opted_out_at"]
    assert [(e.opted_in, e.source) for e in consent_history(owner.workspace_id, lead_id)] == [(False, "api")]
    response = api.post("/messages", {"to": PHONE, "text": "Oi"})
    assert response.status_code == 409 and response.json["error"]["code"] == "opted_out"


def test_an_opt_out_holds_for_the_other_spelling_of_a_brazilian_mobile(
    api: Api, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    """WhatsApp reports some Brazilian mobiles without the ninth digit; people type them with it."""
    factories.inbound(cloud_account.id, phone="+551187654321", text="SAIR")
    graph_api.sent.clear()
    response = api.post("/messages", {"to": "+55 11 98765-4321", "text": "Promoção!"})
    assert response.status_code == 409 and response.json["error"]["code"] == "opted_out"
    from crm.leads.services import create_lead

    other = create_lead(cloud_account.workspace_id, phone="+5511987654321")  # typed in by someone
    conversation = factories.inbound(cloud_account.id, phone="+5511987654321", text="Oi")
    assert db.session.get(Conversation, conversation).lead_id == other.id  # type: ignore[union-attr]
    response = api.post(f"/conversations/{conversation}/messages", {"text": "Oferta"})
    assert response.status_code == 409
    assert graph_api.sent == []
