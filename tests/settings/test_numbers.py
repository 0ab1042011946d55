from __future__ import annotations

import re
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select

from crm.crypto import decrypt_json
from crm.extensions import db
from crm.inbox.models import Message
from crm.whatsapp.models import WhatsAppAccount
from tests import factories
from tests.conftest import csrf_from, login

CLOUD = {
    "provider": "cloud",
    "name": "Vendas",
    "phone_number_id": "1098765",
    "waba_id": "555",
    "access_token": "EAAG-secret-token",
    "app_secret": "app-secret-value",
    "verify_token": "verify-value",
    "graph_url": "",
}


def add_number(client: FlaskClient, **form: str) -> Any:
    return client.post(
        "/settings/numbers", data={**form, "csrf_token": csrf_from(client, "/settings/numbers")}
    )


def test_add_a_sandbox_number(logged_in: FlaskClient) -> None:
    response = add_number(logged_in, provider="sandbox", name="Teste")
    assert response.status_code == 302
    account = db.session.scalar(select(WhatsAppAccount))
    assert account is not None and account.provider == "sandbox" and account.health == "connected"
    assert "Teste" in logged_in.get("/settings/numbers").get_data(as_text=True)


def test_cloud_number_secrets_are_encrypted_and_never_shown(logged_in: FlaskClient) -> None:
    assert add_number(logged_in, **CLOUD).status_code == 302
    account = db.session.scalar(select(WhatsAppAccount))
    assert account is not None and account.webhook_key
    assert "EAAG-secret-token" not in (account.secrets_encrypted or "")
    assert decrypt_json(account.secrets_encrypted)["access_token"] == "EAAG-secret-token"
    page = logged_in.get(f"/settings/numbers/{account.id}").get_data(as_text=True)
    for secret in ("EAAG-secret-token", "app-secret-value", "verify-value"):
        assert secret not in page
    assert f"/webhooks/cloud/{account.webhook_key}" in page


def test_editing_with_blank_secrets_keeps_them(logged_in: FlaskClient) -> None:
    add_number(logged_in, **CLOUD)
    account = db.session.scalar(select(WhatsAppAccount))
    assert account is not None
    path = f"/settings/numbers/{account.id}"
    response = logged_in.post(
        path,
        data={
            "name": "Vendas SP",
            "max_per_minute": "30",
            "active": "y",
            "priority": "0",
            "weight": "100",
            "fallback_account_id": "",
            "phone_number_id": "1098765",
            "waba_id": "555",
            "access_token": "",
            "app_secret": "",
            "verify_token": "",
            "graph_url": "",
            "csrf_token": csrf_from(logged_in, path),
        },
    )
    assert response.status_code == 302
    db.session.refresh(account)
    assert account.name == "Vendas SP" and account.max_per_minute == 30
    assert decrypt_json(account.secrets_encrypted)["app_secret"] == "app-secret-value"


def test_cloud_number_without_its_settings_is_refused(logged_in: FlaskClient) -> None:
    response = add_number(logged_in, provider="cloud", name="Incompleto")
    assert response.status_code == 422
    assert "needs" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(WhatsAppAccount)) == 0


def test_agents_cannot_manage_numbers(client: FlaskClient, owner: factories.Person) -> None:
    agent = factories.person("Acme", "agent@acme.example")
    login(client, agent.email)
    assert client.get("/settings/numbers").status_code == 403


def test_simulator_round_trip(logged_in: FlaskClient, owner: factories.Person) -> None:
    account_id = factories.sandbox_account(owner)
    path = f"/settings/numbers/{account_id}/simulator"
    page = logged_in.get(path).get_data(as_text=True)
    assert "nothing here reaches WhatsApp" in page
    response = logged_in.post(
        path,
        data={
            "phone": "(11) 98888-1111",
            "name": "Joana",
            "text": "Quero um bolo",
            "csrf_token": csrf_from(logged_in, path),
        },
    )
    assert response.status_code == 302 and "phone=%2B5511988881111" in response.headers["Location"]
    message = db.session.scalar(select(Message))
    assert message is not None and message.text == "Quero um bolo" and message.direction == "in"
    # The business answers through the API; the simulated phone shows it.
    token = factories.api_token(owner)
    logged_in.post(
        f"/api/v1/conversations/{message.conversation_id}/messages",
        json={"text": "Temos de chocolate!"},
        headers={"Authorization": f"Bearer {token}"},
    )
    fragment = logged_in.get(f"{path}?phone=%2B5511988881111", headers={"HX-Request": "true"})
    html = fragment.get_data(as_text=True)
    assert html.lstrip().startswith('<div class="phone-thread" id="simulator-thread"')
    assert re.search(r"Quero um bolo.*Temos de chocolate!", html, re.S)


def test_simulator_is_only_for_sandbox_numbers(logged_in: FlaskClient, owner: factories.Person) -> None:
    add_number(logged_in, **CLOUD)
    account = db.session.scalar(select(WhatsAppAccount))
    assert account is not None
    assert logged_in.get(f"/settings/numbers/{account.id}/simulator").status_code == 422


def test_groups_page_lists_synced_groups(logged_in: FlaskClient, owner: factories.Person) -> None:
    from crm.whatsapp import webqr
    from crm.whatsapp.accounts import create_account

    account = create_account(owner.workspace_id, provider="webqr", name="Loja")
    webqr.sync_groups(account.id, [("1203@g.us", "Clientes VIP", 42, True)])
    html = logged_in.get("/settings/groups").get_data(as_text=True)
    assert "Clientes VIP" in html and "42" in html
    assert logged_in.get(f"/settings/groups?account_id={account.id}").status_code == 200
    assert logged_in.get("/settings/groups?account_id=zzz").status_code == 200
