from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import func, select

from crm.auth.models import Membership, User, Workspace
from crm.extensions import db
from tests.conftest import csrf_from

FORM = {
    "workspace": "Padaria Pão Quente",
    "name": "Ana",
    "email": "ana@padaria.example",
    "password": "uma senha boa",
    "confirm": "uma senha boa",
    "country": "BR",
    "timezone": "America/Sao_Paulo",
}


def test_first_visit_goes_to_setup(client: FlaskClient) -> None:
    response = client.get("/login")
    assert response.status_code == 302 and response.headers["Location"] == "/setup"


def test_setup_creates_workspace_and_owner_and_signs_in(client: FlaskClient) -> None:
    response = client.post("/setup", data={**FORM, "csrf_token": csrf_from(client, "/setup")})
    assert response.status_code == 302
    assert "<title>Inbox" in client.get("/").get_data(as_text=True)
    membership = db.session.scalar(select(Membership))
    assert membership is not None and membership.role == "owner"
    assert membership.workspace.name == "Padaria Pão Quente"
    assert membership.workspace.timezone == "America/Sao_Paulo"
    # Once someone exists, the setup page is gone.
    assert client.get("/setup").status_code == 404


def test_setup_with_bad_input_changes_nothing(client: FlaskClient) -> None:
    csrf = csrf_from(client, "/setup")
    for bad in (
        {"password": "short", "confirm": "short"},
        {"confirm": "other"},
        {"email": "nope"},
        {"country": "ZZ"},
        {"timezone": "Nowhere/City"},
        {"workspace": ""},
    ):
        response = client.post("/setup", data={**FORM, **bad, "csrf_token": csrf})
        assert response.status_code == 400, bad
    assert db.session.scalar(select(func.count()).select_from(User)) == 0
    assert db.session.scalar(select(func.count()).select_from(Workspace)) == 0
