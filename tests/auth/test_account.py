from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from crm.auth.models import User, UserSession
from crm.auth.passwords import hash_password
from crm.extensions import db
from tests import factories
from tests.conftest import csrf_from, login


def change_password(client: FlaskClient, current: str, new: str, confirm: str | None = None) -> int:
    return client.post(
        "/account",
        data={
            "pw-current": current,
            "pw-new": new,
            "pw-confirm": confirm or new,
            "csrf_token": csrf_from(client, "/account"),
        },
    ).status_code


def test_password_change_ends_the_other_sessions_only(
    app: Flask, logged_in: FlaskClient, owner: factories.Person
) -> None:
    phone = app.test_client()
    login(phone, owner.email)
    assert phone.get("/").status_code == 200
    assert change_password(logged_in, factories.PASSWORD, "a brand new secret") == 302
    assert logged_in.get("/").status_code == 200  # this session stays
    assert phone.get("/").status_code == 302  # the other one is gone
    reasons = db.session.scalars(select(UserSession.revoked_reason)).all()
    assert sorted(r or "" for r in reasons) == ["", "password_changed"]
    assert login(app.test_client(), owner.email, "a brand new secret").status_code == 302


def test_password_change_rejects_bad_input(logged_in: FlaskClient, owner: factories.Person) -> None:
    user = db.session.get(User, owner.user_id)
    assert user is not None
    before = user.password_hash
    assert change_password(logged_in, "wrong current", "a brand new secret") == 400
    assert change_password(logged_in, factories.PASSWORD, "short") == 400
    assert change_password(logged_in, factories.PASSWORD, "a brand new secret", "different") == 400
    db.session.refresh(user)
    assert user.password_hash == before


def test_own_sessions_are_listed_and_can_be_ended(
    app: Flask, logged_in: FlaskClient, owner: factories.Person
) -> None:
    other = factories.session_for(owner)
    html = logged_in.get("/account").get_data(as_text=True)
    assert f'id="session-{other.id}"' in html
    response = logged_in.post(
        f"/account/sessions/{other.id}/revoke", data={"csrf_token": csrf_from(logged_in, "/account")}
    )
    assert response.status_code == 302
    db.session.refresh(other)
    assert other.revoked_reason == "revoked"


def test_passwords_are_argon2id_with_owasp_parameters(app: Flask, monkeypatch: object) -> None:
    from crm.config import from_env

    production = from_env()
    app.config.update(
        {k: production[k] for k in ("ARGON2_MEMORY_KIB", "ARGON2_TIME_COST", "ARGON2_PARALLELISM")}
    )
    try:
        assert hash_password("whatever").startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    finally:
        app.config.update({"ARGON2_MEMORY_KIB": 1024, "ARGON2_TIME_COST": 1})
