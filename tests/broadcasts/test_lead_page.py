"""The lead page's "add to broadcast": an opted-in lead joins a broadcast that has not finished."""

from __future__ import annotations

import time_machine
from flask.testing import FlaskClient
from sqlalchemy import select

from crm.broadcasts.models import Broadcast, BroadcastRecipient
from crm.broadcasts.services import Draft, create_broadcast
from crm.extensions import db
from crm.whatsapp.models import WhatsAppAccount
from tests import factories
from tests.broadcasts.conftest import add_leads, drive
from tests.conftest import csrf_from, login
from tests.fakes.graph_api import GraphEmulator


def _open_broadcast(owner: factories.Person) -> int:
    from crm.broadcasts.services import pause_broadcast

    add_leads(owner, 2, tags=("vip",))
    broadcast = create_broadcast(owner.workspace_id, Draft(name="Natal", variants=["Feliz Natal {{name}}"]))
    return pause_broadcast(owner.workspace_id, broadcast.id).id  # waiting: a lead can still join


def _add(client: FlaskClient, lead_id: int, broadcast_id: int) -> str:
    token = csrf_from(client, f"/leads/{lead_id}")
    response = client.post(
        f"/leads/{lead_id}/broadcasts", data={"csrf_token": token, "broadcast_id": str(broadcast_id)}
    )
    assert response.status_code == 303
    return client.get(response.headers["Location"]).get_data(as_text=True)  # with the flash


def test_an_opted_in_lead_is_added_and_gets_it(
    logged_in: FlaskClient,
    owner: factories.Person,
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    clock: time_machine.Traveller,
) -> None:
    broadcast_id = _open_broadcast(owner)
    lead_id = factories.lead(owner, "+5511955554444", "Joana", opt_in=True)
    page = logged_in.get(f"/leads/{lead_id}").get_data(as_text=True)
    assert "Add to broadcast" in page and "Natal" in page
    assert "Added to the broadcast." in _add(logged_in, lead_id, broadcast_id)
    assert "Already in that broadcast." in _add(logged_in, lead_id, broadcast_id)
    broadcast = db.session.get(Broadcast, broadcast_id)
    assert broadcast is not None and broadcast.recipients_count == 3
    from crm.broadcasts.services import resume_broadcast

    resume_broadcast(owner.workspace_id, broadcast_id)
    assert drive(broadcast_id, clock).status == "done"
    assert "Feliz Natal Joana" in {m.text for m in graph_api.sent}
    assert "Natal" in logged_in.get(f"/leads/{lead_id}").get_data(as_text=True)


def test_a_lead_without_consent_is_refused_and_nothing_changes(
    logged_in: FlaskClient, owner: factories.Person, cloud_account: WhatsAppAccount
) -> None:
    broadcast_id = _open_broadcast(owner)
    never = factories.lead(owner, "+5511955554444", "Sem consentimento")
    page = logged_in.get(f"/leads/{never}").get_data(as_text=True)
    assert "Only leads who opted in can be added to a broadcast." in page
    assert "Only a lead who opted in can be in a broadcast." in _add(logged_in, never, broadcast_id)
    stopped = factories.lead(owner, "+5511955553333", "Parou", opt_in=True)
    from crm.leads.consent import ConsentChange, set_consent
    from crm.leads.models import ConsentSource

    set_consent(owner.workspace_id, [stopped], False, ConsentChange(ConsentSource.API))
    assert "opted out" in _add(logged_in, stopped, broadcast_id)
    recipients = db.session.scalars(
        select(BroadcastRecipient.lead_id).where(BroadcastRecipient.broadcast_id == broadcast_id)
    ).all()
    assert never not in recipients and stopped not in recipients


def test_agents_cannot_add(
    client: FlaskClient, owner: factories.Person, cloud_account: WhatsAppAccount
) -> None:
    broadcast_id = _open_broadcast(owner)
    lead_id = factories.lead(owner, "+5511955554444", "Joana", opt_in=True)
    factories.person("Acme", "agent@acme.example")
    assert login(client, "agent@acme.example").status_code == 302
    assert "Add to broadcast" not in client.get(f"/leads/{lead_id}").get_data(as_text=True)
    token = csrf_from(client, f"/leads/{lead_id}")
    data = {"csrf_token": token, "broadcast_id": str(broadcast_id)}
    assert client.post(f"/leads/{lead_id}/broadcasts", data=data).status_code == 403


def test_another_workspaces_broadcast_is_404(
    logged_in: FlaskClient, owner: factories.Person, cloud_account: WhatsAppAccount
) -> None:
    lead_id = factories.lead(owner, "+5511955554444", "Joana", opt_in=True)
    other = factories.person("Other", "other@example.com", role="owner")
    factories.sandbox_account(other)
    add_leads(other, 1, start=50)
    theirs = create_broadcast(other.workspace_id, Draft(name="theirs", variants=["hi"]))
    token = csrf_from(logged_in, f"/leads/{lead_id}")
    data = {"csrf_token": token, "broadcast_id": str(theirs.id)}
    assert logged_in.post(f"/leads/{lead_id}/broadcasts", data=data).status_code == 404
