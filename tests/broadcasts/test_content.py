"""What a broadcast sends: variables, templates, WhatsApp groups, and when (sending hours)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine
from sqlalchemy import select

from crm.broadcasts.dispatch import outside_hours
from crm.broadcasts.render import check_variables, lead_values, render
from crm.broadcasts.services import Draft, create_broadcast
from crm.errors import ValidationFailed
from crm.extensions import db
from crm.leads.models import Lead
from crm.whatsapp import templates
from crm.whatsapp.accounts import create_account
from crm.whatsapp.models import Outbox, OutboxState, WhatsAppAccount, WhatsAppGroup
from crm.whatsapp.outbox import deliver_outbound
from crm.whatsapp.providers.base import OutboundRequest, SendResult
from tests import factories
from tests.broadcasts.conftest import add_leads, drive
from tests.fakes.graph_api import GraphEmulator


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("Oi {{name}}!", {"name": "Ana Paula"}, "Oi Ana Paula!"),
        ("Oi {{ first_name }}!", {"first_name": "Ana"}, "Oi Ana!"),
        ("Oi {{name|cliente}}!", {}, "Oi cliente!"),
        ("Oi {{name}}, tudo bem?", {}, "Oi, tudo bem?"),  # no value, no fallback: tidy
        ("Plano {{Plano|básico}}", {"plano": "Ouro"}, "Plano Ouro"),  # field names ignore case
        ("{{empresa | sua empresa}} agradece", {}, "sua empresa agradece"),
    ],
)
def test_variables(text: str, values: dict[str, str], expected: str) -> None:
    assert render(check_variables(text), values) == expected


@pytest.mark.parametrize("text", ["Oi {{}}", "Oi {{name", "Oi name}}", "Oi {{|x}}"])
def test_broken_variables_are_refused(text: str) -> None:
    with pytest.raises(ValidationFailed):
        check_variables(text)


def test_lead_values_include_custom_fields(owner: factories.Person) -> None:
    lead_id = factories.lead(owner, name="  Ana   Paula ", custom_fields={"Empresa": "Acme"})
    lead = db.session.get(Lead, lead_id)
    assert lead is not None
    assert lead_values(lead) == {
        "empresa": "Acme", "name": "Ana Paula", "first_name": "Ana", "phone": "+5511988887777",
    }  # fmt: skip


def test_template_broadcast_fills_parameters_per_lead(
    owner: factories.Person,
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    clock: time_machine.Traveller,
) -> None:
    graph_api.add_template("promo", "Olá {{1}}, use o cupom {{2}}.")
    graph_api.add_template("pendente", "Oi {{1}}", status="PENDING")
    templates.sync_templates(cloud_account)
    add_leads(owner, 3)
    draft: dict[str, Any] = {"name": "Cupom", "template_name": "promo", "template_language": "pt_BR"}
    with pytest.raises(ValidationFailed):  # a parameter left empty
        create_broadcast(owner.workspace_id, Draft(**draft, template_values={"1": "{{name}}"}))
    with pytest.raises(ValidationFailed):  # not approved
        create_broadcast(owner.workspace_id, Draft(**{**draft, "template_name": "pendente"}))
    broadcast = create_broadcast(
        owner.workspace_id, Draft(**draft, template_values={"1": "{{first_name|cliente}}", "2": "NATAL10"})
    )
    assert drive(broadcast.id, clock).status == "done"
    bodies = {m.to: m.json for m in graph_api.sent}
    assert len(bodies) == 3
    sent = bodies["5511900000001"]
    assert sent["type"] == "template" and sent["template"]["name"] == "promo"
    params = sent["template"]["components"][0]["parameters"]
    assert [p["text"] for p in params] == ["Lead", "NATAL10"]


class FakeGateway:
    """What the WebQR gateway hands to the sender for the number whose session it owns."""

    def __init__(self, account_id: int):
        self.account_id = account_id
        self.sent: list[OutboundRequest] = []

    def send(self, request: OutboundRequest) -> SendResult:
        self.sent.append(request)
        return SendResult(provider_message_id=f"3EB0{len(self.sent):08d}", status="sent")


def test_broadcast_to_whatsapp_groups_goes_through_the_number_in_them(
    owner: factories.Person, clock: time_machine.Traveller
) -> None:
    account = create_account(owner.workspace_id, provider="webqr", name="Loja")
    account.health = "connected"  # its QR code was scanned (the gateway reports it)
    groups = [
        WhatsAppGroup(
            workspace_id=owner.workspace_id, account_id=account.id, jid=f"1203630{i}@g.us", name=name
        )
        for i, name in enumerate(["Clientes VIP", "Promoções"])
    ]
    db.session.add_all(groups)
    db.session.commit()
    broadcast = create_broadcast(
        owner.workspace_id,
        Draft(name="Grupos", variants=["Bom dia, grupo!"], group_ids=[g.id for g in groups]),
    )
    assert broadcast.recipients_count == 2
    gateway = FakeGateway(account.id)
    for _ in range(120):  # the gateway sends what is due for its number, at WebQR's pace
        due = db.session.scalars(select(Outbox.id).where(Outbox.state == OutboxState.QUEUED.value)).all()
        for outbox_id in due:
            deliver_outbound(outbox_id, gateway=gateway)
        from crm.broadcasts.dispatch import dispatch

        if dispatch(broadcast.id).status == "done":
            break
        clock.shift(1)
    assert sorted(r.to for r in gateway.sent) == ["12036300@g.us", "12036301@g.us"]
    assert {r.text for r in gateway.sent} == {"Bom dia, grupo!"}
    kinds = db.session.scalars(select(Lead.kind).where(Lead.bsuid.like("120363%"))).all()
    assert kinds == ["group", "group"]  # the groups' stand-ins, never listed among the leads


def test_outside_sending_hours_it_waits_for_them(
    owner: factories.Person,
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    clock: time_machine.Traveller,
) -> None:
    night = datetime(2026, 12, 4, 1, 30, tzinfo=UTC)  # 22:30 in São Paulo
    assert outside_hours("08:00", "20:00", "America/Sao_Paulo", night) == 9.5 * 3600
    assert outside_hours("22:00", "02:00", "America/Sao_Paulo", night) == 0  # across midnight
    assert outside_hours(None, None, "America/Sao_Paulo", night) == 0
    clock.move_to(night)
    add_leads(owner, 2)
    broadcast = create_broadcast(
        owner.workspace_id, Draft(name="Manhã", variants=["Bom dia"], send_from="08:00", send_until="20:00")
    )
    assert graph_api.sent == []  # started at night: nothing goes out
    assert drive(broadcast.id, clock, step=1800).status == "done"
    assert len(graph_api.sent) == 2
    assert datetime.now(UTC) >= datetime(2026, 12, 4, 11, 0, tzinfo=UTC)  # 08:00 in São Paulo
    with pytest.raises(ValidationFailed):
        create_broadcast(
            owner.workspace_id, Draft(name="x", variants=["x"], send_from="8h", send_until="20:00")
        )


def test_a_photo_is_uploaded_once_per_number_not_once_per_recipient(
    owner: factories.Person,
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    clock: time_machine.Traveller,
) -> None:
    photo = factories.media_file(owner)  # (a customer's photo, on a sandbox number of its own)
    add_leads(owner, 5)
    draft = Draft(
        name="Foto",
        variants=["Novidade, {{first_name}}!"],
        media_file_id=photo,
        account_ids=[cloud_account.id],
    )
    broadcast = create_broadcast(owner.workspace_id, draft)
    assert drive(broadcast.id, clock).status == "done"
    assert len(graph_api.sent) == 5 and len(graph_api.uploads) == 1
    media_ids = {m.json["image"]["id"] for m in graph_api.sent}
    assert media_ids == set(graph_api.uploads)
    assert {m.json["image"].get("caption") for m in graph_api.sent} == {"Novidade, Lead!"}
