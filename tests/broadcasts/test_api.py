"""The broadcasts API as CONTRACT.md writes it: create, read, pause, resume, cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import time_machine
from sqlalchemy import func, select

from crm.broadcasts.models import BroadcastRecipient
from crm.extensions import db
from crm.inbox.models import Conversation
from crm.whatsapp.models import WhatsAppAccount
from tests import factories
from tests.broadcasts.conftest import add_leads, drive, tasks_held
from tests.fakes.graph_api import GraphEmulator
from tests.whatsapp.conftest import Api, post_webhook


def create(api: Api, **body: Any) -> dict[str, Any]:
    response = api.post("/broadcasts", {"name": "Promo", "text": "Olá {{name}}", **body})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_audience_is_opted_in_leads_with_every_tag(
    api: Api, owner: factories.Person, cloud_account: WhatsAppAccount, clock: time_machine.Traveller
) -> None:
    vip = add_leads(owner, 3, tags=("VIP", "sp"))
    add_leads(owner, 2, tags=("vip",), start=10)  # only one of the two tags
    add_leads(owner, 2, tags=("VIP", "SP"), opt_in=False, start=20)  # never opted in
    out = add_leads(owner, 1, tags=("vip", "sp"), start=30)
    factories.lead(owner, "+5511977776666", opt_in=True, tags=("vip", "sp"))
    assert api.patch(f"/leads/{out[0]}", {"opt_in": False}).status_code == 200  # an opt-out
    assert api.client.delete(f"/api/v1/leads/{vip[2]}", headers=api.headers).status_code in (200, 204)

    body = create(api, tags=["vip", "Sp"])  # tags match case-insensitively
    assert body["recipients"] == 3  # vip[0], vip[1] and the lead made by hand
    assert body["status"] == "running"
    assert set(body) >= {"id", "name", "status", "recipients", "queued", "sent", "delivered", "read",
                         "failed", "skipped"}  # fmt: skip
    assert body["queued"] + body["sent"] + body["delivered"] == 3


def test_whole_run_sends_each_recipient_once_and_counts(
    api: Api,
    owner: factories.Person,
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    clock: time_machine.Traveller,
) -> None:
    add_leads(owner, 12)
    created = create(api)
    assert created["recipients"] == 12
    assert drive(created["id"], clock).status == "done"
    body = api.get(f"/broadcasts/{created['id']}").get_json()
    assert body["status"] == "done" and body["sent"] == 12 and body["queued"] == 0
    phones = sorted(m.to for m in graph_api.sent)
    assert phones == sorted(f"55119{i:08d}" for i in range(12))  # each once
    assert {m.text for m in graph_api.sent} == {f"Olá Lead {i}" for i in range(12)}
    # Statuses from the provider move the counters; each recipient is counted once.
    for sent, status in zip(graph_api.sent[:6], ["delivered"] * 4 + ["read", "failed"], strict=True):
        post_webhook(api.client, cloud_account, graph_api.status_payload(sent.wamid, status))
    body = api.get(f"/broadcasts/{created['id']}").get_json()
    assert (body["sent"], body["delivered"], body["read"], body["failed"]) == (6, 4, 1, 1)
    assert db.session.scalar(select(func.count()).select_from(Conversation)) == 12


def test_scheduled_at_needs_an_offset_and_bad_input_changes_nothing(
    api: Api, owner: factories.Person, cloud_account: WhatsAppAccount
) -> None:
    add_leads(owner, 2)
    bad = [
        {"name": "x", "text": "hi", "scheduled_at": "2026-12-24T09:00:00"},
        {"name": "x", "text": "hi", "scheduled_at": "tomorrow"},
        {"name": "", "text": "hi"},
        {"name": "x"},
        {"name": "x", "text": "   "},
        {"name": "x", "text": "Olá {{}}"},
        {"name": "x", "text": "Olá {{name"},
        {"name": "x", "text": "hi", "tags": "vip"},
        {"name": "x", "text": "hi", "tags": [1]},
        {"name": "x", "text": "hi", "account_ids": [999999]},
        {"name": "x", "text": "hi", "account_ids": ["1"]},
        {"name": "x", "text": "x" * 5000},
        {"name": "x", "text": "hi\x00"},
    ]
    for body in bad:
        response = api.post("/broadcasts", body)
        assert response.status_code == 422, (body, response.get_json())
        assert response.get_json()["error"]["code"].startswith("invalid_")
    assert api.client.post("/api/v1/broadcasts", data="nope", headers=api.headers).status_code == 400
    assert db.session.scalar(select(func.count()).select_from(BroadcastRecipient)) == 0
    assert api.get("/broadcasts").get_json()["items"] == []


def test_scheduled_broadcast_waits_for_its_time(
    api: Api,
    owner: factories.Person,
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    clock: time_machine.Traveller,
) -> None:
    add_leads(owner, 3)
    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).astimezone(timezone(timedelta(hours=-3)))
    body = create(api, scheduled_at=in_an_hour.isoformat())  # São Paulo's offset, explicit
    assert body["status"] == "scheduled" and body["recipients"] == 3
    assert drive(body["id"], clock, step=600).status == "done"
    assert len(graph_api.sent) == 3


def test_pause_resume_cancel(
    api: Api,
    owner: factories.Person,
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    clock: time_machine.Traveller,
) -> None:
    add_leads(owner, 5)
    with tasks_held():
        body = create(api)
        paused = api.post(f"/broadcasts/{body['id']}/pause", {}).get_json()
        assert paused["status"] == "paused" and paused["queued"] == 5
    assert drive(body["id"], clock).status == "paused"
    assert graph_api.sent == []  # while paused nothing of it is sent
    resumed = api.post(f"/broadcasts/{body['id']}/resume", {}).get_json()
    assert resumed["status"] == "running"
    assert drive(body["id"], clock).status == "done"
    assert len(graph_api.sent) == 5
    for action in ("pause", "resume", "cancel"):
        response = api.post(f"/broadcasts/{body['id']}/{action}", {})
        assert response.status_code == 409 and response.get_json()["error"]["code"] == "invalid_state"


def test_cancel_skips_every_recipient_still_queued(
    api: Api, owner: factories.Person, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    add_leads(owner, 4)
    with tasks_held():
        body = create(api)
        cancelled = api.post(f"/broadcasts/{body['id']}/cancel", {}).get_json()
    assert cancelled["status"] == "cancelled"
    assert (cancelled["skipped"], cancelled["queued"], cancelled["sent"]) == (4, 0, 0)
    assert graph_api.sent == []


@pytest.mark.parametrize("path", ["/broadcasts/999999", "/broadcasts/999999/pause"])
def test_unknown_and_other_workspaces_broadcasts_are_404(
    api: Api, owner: factories.Person, cloud_account: WhatsAppAccount, path: str
) -> None:
    other = factories.person("Other", "other@example.com", role="owner")
    factories.sandbox_account(other)
    add_leads(other, 1)
    from crm.broadcasts.services import Draft, create_broadcast

    theirs = create_broadcast(other.workspace_id, Draft(name="theirs", variants=["hi"]))
    for candidate in (path, path.replace("999999", str(theirs.id))):
        response = api.get(candidate) if "pause" not in candidate else api.post(candidate, {})
        assert response.status_code == 404
