from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from crm.auth.models import ApiToken
from crm.extensions import db
from tests import factories
from tests.conftest import csrf_from


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_reaches_its_own_workspace(client: FlaskClient, owner: factories.Person) -> None:
    token = factories.api_token(owner)
    response = client.get("/api/v1/workspace", headers=bearer(token))
    assert response.status_code == 200
    assert response.json == {
        "id": owner.workspace_id,
        "name": "Acme",
        "country": "BR",
        "timezone": "America/Sao_Paulo",
        "locale": "pt_BR",
    }


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer zd_not-a-real-token"],
    ids=["missing", "empty", "blank", "basic", "unknown"],
)
def test_bad_credentials_answer_401_json(
    client: FlaskClient, owner: factories.Person, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = client.get("/api/v1/workspace", headers=headers)
    assert response.status_code == 401
    body = response.json
    assert body is not None and body["error"]["code"] == "unauthorized" and body["error"]["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_browser_session_is_not_an_api_credential(logged_in: FlaskClient) -> None:
    assert logged_in.get("/api/v1/workspace").status_code == 401


def test_revoked_token_stops_working(logged_in: FlaskClient, owner: factories.Person) -> None:
    token = factories.api_token(owner)
    row_id = factories.api_token_row(owner)  # a second one, to check only the revoked one stops
    other = db.session.get(ApiToken, row_id)
    assert other is not None
    first = db.session.query(ApiToken).filter(ApiToken.id != row_id).one()
    response = logged_in.post(
        f"/settings/tokens/{first.id}/revoke", data={"csrf_token": csrf_from(logged_in, "/")}
    )
    assert response.status_code == 302
    assert logged_in.get("/api/v1/workspace", headers=bearer(token)).status_code == 401


def test_token_of_a_disabled_member_stops_working(client: FlaskClient, owner: factories.Person) -> None:
    agent = factories.person("Acme", "agent@acme.example")
    token = factories.api_token(agent)
    assert client.get("/api/v1/workspace", headers=bearer(token)).status_code == 200
    agent.membership.disabled_at = owner.membership.created_at
    db.session.commit()
    assert client.get("/api/v1/workspace", headers=bearer(token)).status_code == 401


def test_token_is_shown_once_and_stored_hashed(logged_in: FlaskClient) -> None:
    html = logged_in.post(
        "/settings/tokens", data={"name": "Website", "csrf_token": csrf_from(logged_in, "/")}
    )
    match = re.search(r'value="(zd_[^"]+)"', html.get_data(as_text=True))
    assert match
    shown = match.group(1)
    row = db.session.query(ApiToken).one()
    assert row.name == "Website" and row.token_hash != shown and shown.startswith(row.prefix)
    assert logged_in.get("/api/v1/workspace", headers=bearer(shown)).status_code == 200
    assert shown not in logged_in.get("/settings/tokens").get_data(as_text=True)


def test_unknown_api_route_is_json_404(client: FlaskClient, owner: factories.Person) -> None:
    response = client.get("/api/v1/nothing-here", headers=bearer(factories.api_token(owner)))
    assert response.status_code == 404
    assert response.json == {"error": {"code": "not_found", "message": "Not found."}}


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}
