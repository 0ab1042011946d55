"""Hostile or odd input to the API answers 4xx with a code, never 500."""

from __future__ import annotations

import base64
import json

import pytest
from flask.testing import FlaskClient

from tests import factories


@pytest.fixture
def auth(owner: factories.Person) -> dict[str, str]:
    return {"Authorization": f"Bearer {factories.api_token(owner)}"}


def cursor(values: list[object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/conversations/99999999999999999999/messages",
        "/api/v1/conversations/0/messages",
        "/settings/numbers/99999999999999999999",
    ],
)
def test_huge_or_zero_ids_are_404(client: FlaskClient, auth: dict[str, str], path: str) -> None:
    assert client.get(path, headers=auth).status_code in (404, 302)


@pytest.mark.parametrize("value", [[2**70, 1], ["2024-01-01T00:00:00", 5], ["nope", 1], [1], "x"])
def test_bad_cursors_are_400(client: FlaskClient, auth: dict[str, str], value: object) -> None:
    response = client.get(
        f"/api/v1/conversations?cursor={cursor(value) if value != 'x' else 'x'}", headers=auth
    )
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize("text", ["\ud800", "a\x00b"])
def test_unencodable_text_is_422(
    client: FlaskClient, auth: dict[str, str], owner: factories.Person, text: str
) -> None:
    factories.sandbox_account(owner)
    body = json.dumps({"to": "+5511988887777", "text": text}).encode()
    response = client.post("/api/v1/messages", data=body, content_type="application/json", headers=auth)
    assert response.status_code == 422 and response.json["error"]["code"] == "invalid_text"


def test_deeply_nested_json_is_400(client: FlaskClient, auth: dict[str, str]) -> None:
    body = "[" * 100_000 + "]" * 100_000
    response = client.post("/api/v1/messages", data=body, content_type="application/json", headers=auth)
    assert response.status_code == 400


def test_huge_account_id_in_body_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/messages", json={"to": "+5511988887777", "text": "x", "account_id": 2**70}, headers=auth
    )
    assert response.status_code == 422


def test_nul_in_lead_fields_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/api/v1/leads", json={"phone": "+5511988887777", "name": "a\x00"}, headers=auth)
    assert response.status_code == 422
    assert client.get("/api/v1/leads?q=a%00b&tag=x%00", headers=auth).status_code == 200
