"""The Cloud API webhook: verification, signatures, every payload shape, duplicates, tenancy."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from crm.extensions import db
from crm.inbox.models import Conversation, Message
from crm.leads.models import Lead
from crm.whatsapp.accounts import webhook_path
from crm.whatsapp.models import WhatsAppAccount
from tests import factories
from tests.fakes.graph_api import GraphEmulator
from tests.services import require_service
from tests.whatsapp.conftest import VERIFY_TOKEN, make_cloud_account, post_webhook, signature

FIXTURES = Path(
    os.environ.get("CRM_FIXTURES_DIR", Path(__file__).resolve().parents[3] / "shared" / "fixtures")
)
CORPUS = FIXTURES / "cloud-api-webhooks" if (FIXTURES / "cloud-api-webhooks").is_dir() else FIXTURES
FILES = sorted(CORPUS.rglob("*.json")) if CORPUS.is_dir() else []


def count(model: type[Any]) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0


def inbound_ids(payload: dict[str, Any]) -> set[str]:
    ids = set()
    for entry in payload.get("entry", []):
        for change in entry.get("changes", []):
            value = change.get("value", {})
            for key in ("messages", "message_echoes"):
                ids.update(m["id"] for m in value.get(key, []) if isinstance(m, dict) and "id" in m)
    return ids


def test_verification_echoes_the_challenge(client: FlaskClient, cloud_account: WhatsAppAccount) -> None:
    path = webhook_path(cloud_account)
    ok = client.get(f"{path}?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=12345")
    assert ok.status_code == 200 and ok.get_data(as_text=True) == "12345"
    wrong = client.get(f"{path}?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=12345")
    assert wrong.status_code == 403
    assert client.get("/webhooks/cloud/unknown-key?hub.mode=subscribe").status_code == 404


@pytest.mark.parametrize("case", ["missing", "forged", "tampered", "other-secret", "bad-prefix"])
def test_bad_signatures_are_401_and_store_nothing(
    client: FlaskClient, cloud_account: WhatsAppAccount, graph_api: GraphEmulator, case: str
) -> None:
    body = json.dumps(graph_api.message_payload(text="hello")).encode()
    sig = {
        "missing": "",
        "forged": "sha256=" + "0" * 64,
        "tampered": signature(body.replace(b"hello", b"hellx")),
        "other-secret": signature(body, "another-secret"),
        "bad-prefix": signature(body).replace("sha256=", "sha1="),
    }[case]
    response = post_webhook(client, cloud_account, None, raw=body, sig=sig)
    assert response.status_code == 401
    assert count(Message) == 0 and count(Lead) == 0


def test_signed_non_json_is_400(client: FlaskClient, cloud_account: WhatsAppAccount) -> None:
    assert post_webhook(client, cloud_account, None, raw=b"not json{").status_code == 400
    assert count(Message) == 0


def test_text_message_is_stored_and_visible_through_the_api(
    client: FlaskClient, cloud_account: WhatsAppAccount, graph_api: GraphEmulator, token: str
) -> None:
    payload = graph_api.message_payload(from_phone="5511988887777", text="Oi, tudo bem?", name="Maria")
    assert post_webhook(client, cloud_account, payload).status_code == 200
    headers = {"Authorization": f"Bearer {token}"}
    conversations = client.get("/api/v1/conversations", headers=headers).json["data"]
    assert len(conversations) == 1
    assert conversations[0]["lead"]["phone"] == "+5511988887777"
    assert conversations[0]["lead"]["name"] == "Maria"
    assert conversations[0]["unread_count"] == 1 and conversations[0]["account_id"] == cloud_account.id
    messages = client.get(f"/api/v1/conversations/{conversations[0]['id']}/messages", headers=headers).json[
        "data"
    ]
    assert messages[0]["text"] == "Oi, tudo bem?" and messages[0]["direction"] == "in"
    assert messages[0]["author"] == "lead" and messages[0]["provider"] == "cloud"


def test_duplicate_deliveries_store_nothing_new(
    client: FlaskClient, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    payload = graph_api.message_payload(text="once", wamid="wamid.dup-1")
    for _ in range(3):
        assert post_webhook(client, cloud_account, payload).status_code == 200
    assert count(Message) == 1
    conversation = db.session.scalar(select(Conversation))
    assert conversation is not None and conversation.unread_count == 1


def test_wa_id_is_authoritative_even_when_not_a_valid_number(
    client: FlaskClient, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    payload = graph_api.message_payload(from_phone="999", text="odd")
    assert post_webhook(client, cloud_account, payload).status_code == 200
    lead = db.session.scalar(select(Lead))
    assert lead is not None and lead.phone == "+999"


@pytest.mark.skipif(not FILES, reason="no fixture corpus")
@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(CORPUS)) for p in FILES])
def test_every_corpus_body_is_accepted_and_every_message_stored(
    client: FlaskClient, cloud_account: WhatsAppAccount, path: Path
) -> None:
    payload = json.loads(path.read_text())
    assert post_webhook(client, cloud_account, payload).status_code == 200
    expected = inbound_ids(payload)
    stored = set(db.session.scalars(select(Message.provider_message_id)))
    assert expected <= stored, f"not stored: {expected - stored}"
    assert post_webhook(client, cloud_account, payload).status_code == 200  # Meta retries: nothing new
    assert count(Message) == len(stored)


def test_the_corpus_is_there() -> None:
    if not FILES:
        require_service(f"the webhook corpus is missing at {CORPUS}")
    assert len(FILES) >= 80


def test_bsuid_only_sender_becomes_a_lead_without_phone(
    client: FlaskClient, cloud_account: WhatsAppAccount
) -> None:
    if not FILES:
        require_service("the webhook corpus is missing")
    payload = json.loads((CORPUS / "chatwoot" / "message-text-bsuid-only.json").read_text())
    assert post_webhook(client, cloud_account, payload).status_code == 200
    lead = db.session.scalar(select(Lead))
    assert lead is not None and lead.phone is None and lead.bsuid == "IN.2081978709342942"


def test_several_entries_and_changes_in_one_post(
    client: FlaskClient, cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    first = graph_api.message_payload(from_phone="5511900000001", text="a", wamid="wamid.a")
    second = graph_api.message_payload(from_phone="5511900000002", text="b", wamid="wamid.b")
    third = graph_api.message_payload(from_phone="5511900000003", text="c", wamid="wamid.c")
    combined = copy.deepcopy(first)
    combined["entry"][0]["changes"].append(second["entry"][0]["changes"][0])
    combined["entry"].append(third["entry"][0])
    assert post_webhook(client, cloud_account, combined).status_code == 200
    assert set(db.session.scalars(select(Message.text))) == {"a", "b", "c"}
    assert count(Lead) == 3


def test_a_webhook_never_writes_into_another_workspace(
    client: FlaskClient, graph_api: GraphEmulator, owner: factories.Person
) -> None:
    mine = make_cloud_account(owner, graph_api, phone_number_id="111")
    other = factories.person("Other", "other@other.example", role="owner")
    theirs = make_cloud_account(other, graph_api, phone_number_id="222")
    payload = graph_api.message_payload(text="aimed at 222")
    payload["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "222"
    assert post_webhook(client, mine, payload).status_code == 200
    message = db.session.scalar(select(Message))
    assert (
        message is not None and message.workspace_id == owner.workspace_id and message.account_id == mine.id
    )
    assert (
        db.session.scalar(select(func.count()).select_from(Message).where(Message.account_id == theirs.id))
        == 0
    )


def test_phone_number_id_routes_between_numbers_of_one_workspace(
    client: FlaskClient, graph_api: GraphEmulator, owner: factories.Person
) -> None:
    first = make_cloud_account(owner, graph_api, phone_number_id="111", name="One")
    second = make_cloud_account(owner, graph_api, phone_number_id="222", name="Two")
    payload = graph_api.message_payload(text="for two")
    payload["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "222"
    assert post_webhook(client, first, payload).status_code == 200
    message = db.session.scalar(select(Message))
    assert message is not None and message.account_id == second.id


def test_account_updates_change_the_numbers_health(
    client: FlaskClient, cloud_account: WhatsAppAccount
) -> None:
    if not FILES:
        require_service("the webhook corpus is missing")
    payload = json.loads((CORPUS / "pywa" / "account-update-restriction.json").read_text())
    assert post_webhook(client, cloud_account, payload).status_code == 200
    db.session.refresh(cloud_account)
    assert cloud_account.health == "degraded"
