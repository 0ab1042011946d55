"""Saved replies: managed in settings, suggested in the composer by /shortcut."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import select

from crm.extensions import db
from crm.inbox import canned
from crm.inbox.models import CannedResponse
from tests import factories
from tests.conftest import csrf_from, login


def _save(client: FlaskClient, shortcut: str, text: str) -> int:
    form = {"csrf_token": csrf_from(client, "/settings/replies"), "shortcut": shortcut, "text": text}
    return client.post("/settings/replies", data=form).status_code


def test_managers_save_replies_with_clean_shortcuts(logged_in: FlaskClient) -> None:
    assert _save(logged_in, "/Horario", "Abrimos das 9h às 18h, {{name}}.") == 302
    assert db.session.scalars(select(CannedResponse.shortcut)).all() == ["horario"]
    page = logged_in.get("/settings/replies").get_data(as_text=True)
    assert "/horario" in page and "Abrimos das 9h" in page


def test_bad_or_duplicate_replies_change_nothing(logged_in: FlaskClient) -> None:
    assert _save(logged_in, "hours", "9 to 6") == 302
    assert _save(logged_in, "hours", "another") == 409
    assert _save(logged_in, "two words", "x") == 422
    assert _save(logged_in, "ok", "") == 422
    assert _save(logged_in, "ok", "x" * 4097) == 422
    assert db.session.scalars(select(CannedResponse.text)).all() == ["9 to 6"]


def test_agents_use_replies_but_do_not_manage_them(client: FlaskClient, owner: factories.Person) -> None:
    reply_id = factories.canned_reply(owner, "hi", "Hello")
    factories.person("Acme", "agent@acme.example")
    assert login(client, "agent@acme.example").status_code == 302
    assert "/hi" in client.get("/settings/replies").get_data(as_text=True)
    assert _save(client, "new", "text") == 403
    csrf = csrf_from(client, "/settings/replies")
    assert client.post(f"/settings/replies/{reply_id}/delete", data={"csrf_token": csrf}).status_code == 403
    assert db.session.get(CannedResponse, reply_id) is not None


def test_typing_a_slash_suggests_replies_filled_for_the_customer(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    conversation_id = factories.inbound(factories.sandbox_account(owner), name="Marina Souza")
    factories.canned_reply(owner, "hours", "Oi {{name}}, abrimos às 9h.")
    factories.canned_reply(owner, "price", "Custa R$ 10.")

    def suggested(text: str) -> str:
        response = logged_in.get(f"/conversations/{conversation_id}/replies", query_string={"text": text})
        assert response.status_code == 200
        return response.get_data(as_text=True)

    assert "Oi Marina, abrimos às 9h." in suggested("/ho") and "/price" not in suggested("/ho")
    everything = suggested("/")
    assert "/hours" in everything and "/price" in everything
    assert suggested("hello").strip() == ""
    assert (
        canned.fill("Oi {{name}}!", "Jo\\q \\1") == "Oi Jo\\q!"
    )  # a name is text, never a pattern  # not a shortcut: nothing
    assert suggested("/h%").strip() == "" and suggested("/_").strip() == ""


def test_managers_delete_replies(logged_in: FlaskClient, owner: factories.Person) -> None:
    reply_id = factories.canned_reply(owner)
    csrf = csrf_from(logged_in, "/settings/replies")
    assert (
        logged_in.post(f"/settings/replies/{reply_id}/delete", data={"csrf_token": csrf}).status_code == 302
    )
    assert db.session.get(CannedResponse, reply_id) is None
