"""Fixtures for the messaging core: numbers of each provider, the Graph API emulator, signed posts."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from crm.whatsapp.accounts import CloudSettings, create_account, webhook_path
from crm.whatsapp.models import WhatsAppAccount
from tests import factories
from tests.fakes.graph_api import GraphEmulator

APP_SECRET = "test-app-secret"
ACCESS_TOKEN = "test-token"
VERIFY_TOKEN = "verify-me"
PHONE_NUMBER_ID = "1234567890"


@pytest.fixture(scope="session")
def graph() -> Iterator[GraphEmulator]:
    with GraphEmulator(
        access_token=ACCESS_TOKEN, app_secret=APP_SECRET, phone_number_id=PHONE_NUMBER_ID
    ) as emulator:
        yield emulator


@pytest.fixture
def graph_api(graph: GraphEmulator) -> Iterator[GraphEmulator]:
    graph.reset()
    yield graph
    graph.reset()


def make_cloud_account(
    person: factories.Person,
    graph: GraphEmulator,
    *,
    phone_number_id: str = PHONE_NUMBER_ID,
    name: str = "Cloud",
    **kwargs: Any,
) -> WhatsAppAccount:
    """A Cloud API number of ``person``'s workspace, pointed at the emulator (which learns the id)."""
    if phone_number_id != PHONE_NUMBER_ID:
        graph.add_phone_number(phone_number_id)
    return create_account(
        person.workspace_id,
        provider="cloud",
        name=name,
        cloud=CloudSettings(
            phone_number_id=phone_number_id,
            access_token=ACCESS_TOKEN,
            app_secret=APP_SECRET,
            verify_token=VERIFY_TOKEN,
            graph_url=graph.base_url,
            waba_id=graph.waba_id,
        ),
        **kwargs,
    )


@pytest.fixture
def cloud_account(owner: factories.Person, graph_api: GraphEmulator) -> WhatsAppAccount:
    return make_cloud_account(owner, graph_api)


@pytest.fixture
def sandbox_account(owner: factories.Person) -> WhatsAppAccount:
    return create_account(owner.workspace_id, provider="sandbox", name="Sandbox")


@pytest.fixture
def token(owner: factories.Person) -> str:
    return factories.api_token(owner)


@pytest.fixture
def api(client: FlaskClient, token: str) -> Api:
    return Api(client, token)


class Api:
    """The REST API as an integrator calls it."""

    def __init__(self, client: FlaskClient, token: str):
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> Any:
        return self.client.get(f"/api/v1{path}", headers=self.headers)

    def post(self, path: str, body: Any) -> Any:
        return self.client.post(f"/api/v1{path}", json=body, headers=self.headers)

    def patch(self, path: str, body: Any) -> Any:
        return self.client.patch(f"/api/v1{path}", json=body, headers=self.headers)


def signature(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post_webhook(
    client: FlaskClient,
    account: WhatsAppAccount,
    payload: Any,
    *,
    raw: bytes | None = None,
    sig: str | None = None,
) -> Any:
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": sig if sig is not None else signature(body),
    }
    path = webhook_path(account)
    assert path
    return client.post(path, data=body, headers=headers)
