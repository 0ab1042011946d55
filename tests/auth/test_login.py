from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from crm.auth.models import LoginFailure, UserSession
from crm.db import utcnow
from crm.extensions import db
from tests import factories
from tests.conftest import csrf_from, login


def session_cookie(client: FlaskClient) -> str | None:
    cookie = client.get_cookie("zapdesk_session")
    return cookie.value if cookie else None


def test_anonymous_visitor_is_sent_to_login(client: FlaskClient, owner: factories.Person) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_a_tab_whose_session_ended_loads_the_sign_in_page_whole(
    client: FlaskClient, owner: factories.Person
) -> None:
    """An HTMX request (a filter, a reply, the refetch after a reconnect) gets no sign-in page to
    swap into a fragment: htmx is told to load it as the page, and back from it the agent lands
    on the page the tab showed."""
    from urllib.parse import urlencode

    login(client, owner.email)
    row = db.session.scalar(select(UserSession))
    assert row is not None
    row.revoked_at, row.revoked_reason = utcnow(), "logout_everywhere"
    db.session.commit()
    shown = "http://localhost/conversations/7?view=mine"
    response = client.get("/?view=mine", headers={"HX-Request": "true", "HX-Current-URL": shown})
    assert response.status_code == 401 and response.get_data() == b""
    assert "Location" not in response.headers
    sign_in = response.headers["HX-Redirect"]
    assert sign_in == "/login?" + urlencode({"next": "/conversations/7?view=mine"})
    form = {"email": owner.email, "password": factories.PASSWORD, "csrf_token": csrf_from(client, sign_in)}
    back = client.post(sign_in, data=form)
    assert back.status_code == 302 and back.headers["Location"] == "/conversations/7?view=mine"


def test_login_shows_the_inbox(client: FlaskClient, owner: factories.Person) -> None:
    response = login(client, owner.email)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    assert "<title>Inbox" in page.get_data(as_text=True)


def test_login_issues_a_new_session_cookie(client: FlaskClient, owner: factories.Person) -> None:
    csrf_from(client, "/login")
    before = session_cookie(client)
    assert before is not None
    login(client, owner.email)
    after = session_cookie(client)
    assert after is not None and after != before
    assert db.session.scalar(select(func.count()).select_from(UserSession)) == 1


def test_session_cookie_flags(client: FlaskClient, owner: factories.Person) -> None:
    token = csrf_from(client, "/login")
    response = client.post(
        "/login", data={"email": owner.email, "password": factories.PASSWORD, "csrf_token": token}
    )
    header = response.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Secure" not in header


def test_session_cookie_is_secure_over_https(client: FlaskClient, owner: factories.Person) -> None:
    page = client.get("/login", base_url="https://localhost")
    token = page.get_data(as_text=True).split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    response = client.post(
        "/login",
        base_url="https://localhost",
        headers={"Referer": "https://localhost/login"},
        data={"email": owner.email, "password": factories.PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 302
    assert "Secure" in response.headers["Set-Cookie"]
    assert "Strict-Transport-Security" in response.headers


@pytest.mark.parametrize(
    ("email", "password"),
    [("owner@acme.example", "wrong password"), ("nobody@acme.example", factories.PASSWORD)],
    ids=["wrong-password", "unknown-email"],
)
def test_bad_credentials_get_one_message(
    client: FlaskClient, owner: factories.Person, email: str, password: str
) -> None:
    response = login(client, email, password)
    assert response.status_code == 401
    assert "Wrong email or password." in response.get_data(as_text=True)
    assert client.get("/").status_code == 302
    assert db.session.scalar(select(func.count()).select_from(UserSession)) == 0


def test_login_without_csrf_token_is_refused(client: FlaskClient, owner: factories.Person) -> None:
    client.get("/login")
    response = client.post("/login", data={"email": owner.email, "password": factories.PASSWORD})
    assert response.status_code == 400
    assert "Reload the page" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(UserSession)) == 0


def test_logout_ends_the_session_for_good(client: FlaskClient, owner: factories.Person) -> None:
    login(client, owner.email)
    stolen = session_cookie(client)
    token = csrf_from(client, "/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302
    # Replaying the old cookie does not bring the session back.
    client.set_cookie("zapdesk_session", stolen or "")
    assert client.get("/").status_code == 302
    row = db.session.scalar(select(UserSession))
    assert row is not None and row.revoked_reason == "logout"


def test_logout_needs_csrf(logged_in: FlaskClient) -> None:
    assert logged_in.post("/logout").status_code == 400
    assert logged_in.get("/").status_code == 200


def test_idle_session_expires(app: Flask, logged_in: FlaskClient) -> None:
    row = db.session.scalar(select(UserSession))
    assert row is not None
    row.last_seen_at = utcnow() - timedelta(minutes=app.config["SESSION_IDLE_MINUTES"] + 1)
    db.session.commit()
    assert logged_in.get("/").status_code == 302
    db.session.refresh(row)
    assert row.revoked_reason == "expired"


def test_absolute_lifetime_ends_an_active_session(logged_in: FlaskClient) -> None:
    row = db.session.scalar(select(UserSession))
    assert row is not None
    row.created_at = utcnow() - timedelta(hours=25)
    row.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert logged_in.get("/").status_code == 302


def test_login_is_throttled_per_account_without_hashing(
    app: Flask, client: FlaskClient, owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]
    for _ in range(limit):
        assert login(client, owner.email, "wrong").status_code == 401
    calls: list[str] = []
    import crm.auth.services as auth_services

    monkeypatch.setattr(auth_services, "verify_password", lambda *a: calls.append("hash") or True)
    monkeypatch.setattr(auth_services, "burn_verify_time", lambda *a: calls.append("burn"))
    response = login(client, owner.email, factories.PASSWORD)  # even the right password waits
    assert response.status_code == 429
    assert calls == []
    assert db.session.scalar(select(func.count()).select_from(UserSession)) == 0


def test_login_is_throttled_per_ip(
    app: Flask, client: FlaskClient, owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "LOGIN_MAX_FAILURES_PER_IP", 3)
    for i in range(3):
        assert login(client, f"guess{i}@acme.example", "wrong").status_code == 401
    assert login(client, owner.email, factories.PASSWORD).status_code == 429
    other_ip = app.test_client()
    token = csrf_from(other_ip, "/login")
    response = other_ip.post(
        "/login",
        environ_base={"REMOTE_ADDR": "10.9.9.9"},
        data={"email": owner.email, "password": factories.PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 302


def test_successful_login_clears_the_account_counter(client: FlaskClient, owner: factories.Person) -> None:
    login(client, owner.email, "wrong")
    login(client, owner.email)
    keys = db.session.scalars(select(LoginFailure.key)).all()
    assert f"account:{owner.email}" not in keys


def test_open_redirect_is_refused(client: FlaskClient, owner: factories.Person) -> None:
    token = csrf_from(client, "/login")
    response = client.post(
        "/login?next=//evil.example/x",
        data={"email": owner.email, "password": factories.PASSWORD, "csrf_token": token},
    )
    assert response.headers["Location"] == "/"


def test_next_keeps_the_page_asked_for(client: FlaskClient, owner: factories.Person) -> None:
    token = csrf_from(client, "/login")
    response = client.post(
        "/login?next=/leads/",
        data={"email": owner.email, "password": factories.PASSWORD, "csrf_token": token},
    )
    assert response.headers["Location"] == "/leads/"
