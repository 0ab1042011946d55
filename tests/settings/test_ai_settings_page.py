"""Settings → AI replies: who sees and changes it, what is saved, what is refused, the key, the
per-number switches, the knowledge upload, and the warnings (here and in the inbox)."""

from __future__ import annotations

import html
import io
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from crm.ai.budget import day_start
from crm.ai.models import AICall, AISettings
from crm.ai.settings import DEFAULT_HANDOFF_KEYWORDS, settings_of, update_settings
from crm.crypto import decrypt_json
from crm.db import utcnow
from crm.extensions import db
from crm.settings.services import get_workspace
from crm.whatsapp.models import WhatsAppAccount
from tests import factories
from tests.conftest import csrf_from, login

PAGE = "/settings/ai"
KEY = "AIzaSy-test-key-0123456789"


@pytest.fixture
def no_server_key(app: Flask) -> Iterator[None]:
    """No GEMINI_API_KEY on the server, whatever the environment says; restored afterwards."""
    saved = app.config.get("GEMINI_API_KEY")
    app.config["GEMINI_API_KEY"] = None
    yield
    app.config["GEMINI_API_KEY"] = saved


def valid_form(**changes: Any) -> dict[str, Any]:
    """The page's form as a browser sends it with the default settings, then ``changes``."""
    data: dict[str, Any] = {
        "mode": "always",
        "hours_days": ["0", "1", "2", "3", "4"],
        "hours_start": "08:00",
        "hours_end": "18:00",
        "model": "gemini-2.5-flash",
        "instructions": "",
        "knowledge": "",
        "fallback": "",
        "handoff_keywords": ", ".join(DEFAULT_HANDOFF_KEYWORDS),
        "handoff_message": "",
        "per_minute": "10",
        "per_day": "500",
        "history_messages": "20",
        "cache_hours": "24",
        "api_key": "",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def save(client: FlaskClient, **changes: Any) -> Any:
    data = valid_form(**changes)
    data["csrf_token"] = csrf_from(client, PAGE)
    return client.post(PAGE, data=data, content_type="multipart/form-data")


def snapshot(workspace_id: int) -> dict[str, Any]:
    db.session.expire_all()
    settings = settings_of(workspace_id)
    numbers = db.session.scalars(select(WhatsAppAccount).where(WhatsAppAccount.workspace_id == workspace_id))
    return {
        "settings": {
            column.name: getattr(settings, column.name)
            for column in AISettings.__table__.columns
            if column.name not in ("updated_at", "version")
        },
        "numbers": {n.id: n.ai_enabled for n in numbers},
    }


def test_the_page_renders_for_an_admin(logged_in: FlaskClient, owner: factories.Person) -> None:
    factories.sandbox_account(owner, name="Loja")
    response = logged_in.get(PAGE)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'id="ai-status"' in page and ">Off<" in page
    for name in ("enabled", "mode", "hours_days", "model", "instructions", "knowledge", "knowledge_file"):
        assert f'name="{name}"' in page, name
    for name in ("fallback", "handoff_keywords", "handoff_message", "per_minute", "per_day", "api_key"):
        assert f'name="{name}"' in page, name
    assert "AI answers on Loja" in page
    assert 'enctype="multipart/form-data"' in page
    # The defaults the customers get show as placeholders, in the workspace's language.
    assert "Nossa equipe" in page or "Our team will get back to you" in page
    assert f'href="{PAGE}"' in logged_in.get("/settings/").get_data(as_text=True)  # the tab


def test_an_agent_sees_a_summary_and_cannot_change_anything(
    client: FlaskClient, owner: factories.Person
) -> None:
    update_settings(owner.workspace_id, enabled=True, per_minute=7, mode="after_hours", hours_days="0,5")
    agent = factories.person("Acme", "agent@acme.example")
    login(client, agent.email)
    page = client.get(PAGE).get_data(as_text=True)
    assert "What the bot does" in page and 'name="per_minute"' not in page
    assert "Outside business hours" in page and "Monday, Saturday · 08:00\u201318:00" in page
    assert "Requests today" not in page and "API key in use" not in page  # the bill and the key: admins only
    before = snapshot(owner.workspace_id)
    token = csrf_from(client, PAGE)
    response = client.post(PAGE, data={**valid_form(per_minute="99"), "csrf_token": token})
    assert response.status_code == 403
    assert snapshot(owner.workspace_id) == before


def test_saving_valid_settings(logged_in: FlaskClient, owner: factories.Person) -> None:
    response = save(
        logged_in,
        enabled="y",
        mode="after_hours",
        hours_days=["0", "2", "5"],
        hours_start="09:30",
        hours_end="19:00",
        model="gemini-2.5-pro",
        instructions="Be brief.\r\nAlways greet.",
        knowledge="Haircut: R$ 50.",
        fallback="We will answer soon!",
        handoff_keywords="atendente, falar com humano",
        handoff_message="Passing you to the team.",
        per_minute="15",
        per_day="800",
        history_messages="12",
        cache_hours="0",
    )
    assert response.status_code == 302 and response.headers["Location"].endswith(PAGE)
    settings = settings_of(owner.workspace_id)
    assert settings.enabled and settings.mode == "after_hours"
    assert (settings.hours_days, settings.hours_start, settings.hours_end) == ("0,2,5", "09:30", "19:00")
    assert settings.model == "gemini-2.5-pro" and settings.instructions == "Be brief.\nAlways greet."
    assert settings.knowledge == "Haircut: R$ 50." and settings.fallback == "We will answer soon!"
    assert settings.handoff_keywords == "ATENDENTE, FALAR COM HUMANO"
    assert settings.handoff_message == "Passing you to the team."
    assert (settings.per_minute, settings.per_day, settings.history_messages, settings.cache_hours) == (
        15,
        800,
        12,
        0,
    )
    page = logged_in.get(PAGE).get_data(as_text=True)
    assert "Settings saved." in page and "Haircut: R$ 50." in page


def test_untouched_keywords_keep_following_the_defaults(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    assert save(logged_in, per_minute="11").status_code == 302
    settings = settings_of(owner.workspace_id)
    assert settings.per_minute == 11 and settings.handoff_keywords is None
    assert save(logged_in, handoff_keywords="").status_code == 302  # emptied: keyword hand-off is off
    assert settings_of(owner.workspace_id).handoff_keywords == ""


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"per_minute": "0"}, "between 1 and 10000"),
        ({"per_day": "lots"}, "Not a valid integer value"),
        ({"hours_start": "25:00"}, "Not a valid time value"),
        ({"mode": "never"}, "Not a valid choice"),
        ({"instructions": "x" * 10_001}, "10000"),
        ({"fallback": "y" * 2_001}, "2000"),
        ({"knowledge": "Prices\x00list"}, "NUL character"),
        ({"model": "gemini 2.5"}, "Give the name of a Gemini model."),
        ({"handoff_keywords": "h" * 61}, "at most 60 characters"),
        ({"hours_days": ["7"]}, "not a valid choice"),
        ({"api_key": "two words"}, "This is not an API key."),
    ],
)
def test_bad_values_are_refused_and_change_nothing(
    logged_in: FlaskClient, owner: factories.Person, changes: dict[str, Any], message: str
) -> None:
    number = factories.sandbox_account(owner)
    update_settings(owner.workspace_id, enabled=True, per_minute=7, knowledge="Old knowledge.")
    before = snapshot(owner.workspace_id)
    # Other fields changed in the same post are not saved either, the number switch included.
    response = save(logged_in, **{"per_day": "999", "model": "gemini-x", "enabled": None, **changes})
    page = response.get_data(as_text=True)
    assert response.status_code in (400, 422), page
    assert message in html.unescape(page)
    assert 'name="per_minute"' in page  # the form again, with the error
    assert snapshot(owner.workspace_id) == before
    assert before["numbers"][number] is True


def test_the_key_is_encrypted_and_never_shown(
    logged_in: FlaskClient, owner: factories.Person, no_server_key: None
) -> None:
    assert save(logged_in, api_key=f"  {KEY} ").status_code == 302
    row = db.session.get(AISettings, owner.workspace_id)
    assert row is not None and row.api_key_encrypted
    assert KEY not in row.api_key_encrypted
    assert decrypt_json(row.api_key_encrypted) == {"api_key": KEY}
    page = logged_in.get(PAGE).get_data(as_text=True)
    assert KEY not in page and KEY[-6:] not in page
    assert "This workspace\u2019s own key" in page and "Leave empty to keep the current key" in page
    # Saved again with the key field empty: the key stays.
    assert save(logged_in, per_minute="12").status_code == 302
    db.session.expire_all()
    assert decrypt_json(settings_of(owner.workspace_id).api_key_encrypted) == {"api_key": KEY}
    # A refused form does not echo a typed key either.
    refused = save(logged_in, api_key="AIza-another-key", per_minute="0").get_data(as_text=True)
    assert "AIza-another-key" not in refused


def test_removing_the_key(logged_in: FlaskClient, owner: factories.Person, no_server_key: None) -> None:
    update_settings(owner.workspace_id, api_key=KEY)
    page = logged_in.get(PAGE).get_data(as_text=True)
    assert 'name="remove_key"' in page
    assert save(logged_in, remove_key="y").status_code == 302
    assert settings_of(owner.workspace_id).api_key_encrypted is None
    page = logged_in.get(PAGE).get_data(as_text=True)
    assert "There is no key" in page and 'name="remove_key"' not in page


def test_the_page_says_where_the_key_comes_from(
    app: Flask, logged_in: FlaskClient, owner: factories.Person, no_server_key: None
) -> None:
    assert "There is no key" in logged_in.get(PAGE).get_data(as_text=True)
    app.config["GEMINI_API_KEY"] = "server-key"
    assert "The server\u2019s key (GEMINI_API_KEY)" in logged_in.get(PAGE).get_data(as_text=True)
    update_settings(owner.workspace_id, api_key=KEY)
    assert "This workspace\u2019s own key" in logged_in.get(PAGE).get_data(as_text=True)


def test_the_bot_is_switched_per_number(logged_in: FlaskClient, owner: factories.Person) -> None:
    shop = factories.sandbox_account(owner, name="Loja")
    support = factories.sandbox_account(owner, name="Suporte")
    assert save(logged_in, ai_numbers=[str(shop)]).status_code == 302
    db.session.expire_all()
    assert db.session.get_one(WhatsAppAccount, shop).ai_enabled is True
    assert db.session.get_one(WhatsAppAccount, support).ai_enabled is False
    page = logged_in.get(PAGE).get_data(as_text=True)
    assert f'name="ai_numbers" value="{support}" >' in page or f'value="{support}" >' in page
    assert f'name="ai_numbers" value="{shop}" checked' in page


def test_another_workspaces_number_is_refused(logged_in: FlaskClient, owner: factories.Person) -> None:
    mine = factories.sandbox_account(owner)
    theirs = factories.sandbox_account(factories.person("Other", "o@other.example", role="owner"))
    response = save(logged_in, ai_numbers=[str(mine), str(theirs)])
    assert response.status_code == 400
    db.session.expire_all()
    assert db.session.get_one(WhatsAppAccount, theirs).ai_enabled is True


def test_the_knowledge_comes_from_an_uploaded_text_file(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    text = "Horário: seg\u2013sex, 9h às 18h.\r\nCorte: R$ 50 😊\r\n"
    upload = (io.BytesIO("\ufeff".encode() + text.encode()), "faq.md")
    response = save(logged_in, knowledge="typed text, replaced", knowledge_file=upload)
    assert response.status_code == 302
    expected = "Horário: seg\u2013sex, 9h às 18h.\nCorte: R$ 50 😊"
    assert settings_of(owner.workspace_id).knowledge == expected
    page = logged_in.get(PAGE).get_data(as_text=True)
    assert "uploaded file" in page and f'<span id="knowledge-count">{len(expected)}</span>' in page


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        ("Horário de verão".encode("latin-1"), "faq.txt", "faq.txt is not UTF-8 text"),
        (b"%PDF-1.7", "faq.pdf", "Upload a .txt or .md file."),
    ],
)
def test_an_unreadable_knowledge_file_is_refused(
    logged_in: FlaskClient, owner: factories.Person, data: bytes, filename: str, message: str
) -> None:
    update_settings(owner.workspace_id, knowledge="Old knowledge.")
    response = save(logged_in, knowledge="Old knowledge.", knowledge_file=(io.BytesIO(data), filename))
    assert response.status_code == 400
    assert message in html.unescape(response.get_data(as_text=True))
    assert settings_of(owner.workspace_id).knowledge == "Old knowledge."


def test_on_without_a_key_warns_here_and_in_the_managers_inbox(
    client: FlaskClient, logged_in: FlaskClient, owner: factories.Person, no_server_key: None
) -> None:
    update_settings(owner.workspace_id, enabled=True)
    page = logged_in.get(PAGE).get_data(as_text=True)
    assert "AI replies are on, but there is no Gemini API key." in page
    assert "Customers get the fallback reply until a key is set" in page
    inbox = logged_in.get("/").get_data(as_text=True)
    assert 'id="ai-banner"' in inbox and "there is no Gemini API key" in inbox and f'href="{PAGE}"' in inbox
    # Agents are not bothered with it; and with a key (or AI off) the banner goes.
    agent = factories.person("Acme", "agent@acme.example")
    other = logged_in.application.test_client()
    login(other, agent.email)
    assert 'id="ai-banner"' not in other.get("/").get_data(as_text=True)
    update_settings(owner.workspace_id, api_key=KEY)
    assert 'id="ai-banner"' not in logged_in.get("/").get_data(as_text=True)


def test_paused_for_the_day_warns_until_when(logged_in: FlaskClient, owner: factories.Person) -> None:
    update_settings(owner.workspace_id, enabled=True, api_key=KEY)
    row = db.session.get_one(AISettings, owner.workspace_id)
    row.paused_until, row.pause_reason = utcnow() + timedelta(hours=5), "daily_quota"
    db.session.commit()
    page = logged_in.get(PAGE).get_data(as_text=True)
    assert "Paused until" in page and "daily quota is spent" in page
    inbox = logged_in.get(f"/conversations/{factories.conversation(owner)}").get_data(as_text=True)
    assert 'id="ai-banner"' in inbox and "AI replies are paused until" in inbox
    # Saving the page while the bot stays on does not lift the pause; a new key does.
    assert save(logged_in, enabled="y", per_minute="20").status_code == 302
    assert settings_of(owner.workspace_id).paused_until is not None
    assert save(logged_in, enabled="y", api_key="AIza-new-key").status_code == 302
    assert settings_of(owner.workspace_id).paused_until is None
    assert 'id="ai-banner"' not in logged_in.get("/").get_data(as_text=True)


def test_a_pause_that_ended_is_not_shown(logged_in: FlaskClient, owner: factories.Person) -> None:
    update_settings(owner.workspace_id, enabled=True, api_key=KEY)
    row = db.session.get_one(AISettings, owner.workspace_id)
    row.paused_until, row.pause_reason = utcnow() - timedelta(minutes=1), "daily_quota"
    db.session.commit()
    assert "Paused until" not in logged_in.get(PAGE).get_data(as_text=True)
    assert 'id="ai-banner"' not in logged_in.get("/").get_data(as_text=True)


def test_the_last_error_and_the_usage_are_shown(logged_in: FlaskClient, owner: factories.Person) -> None:
    update_settings(owner.workspace_id, enabled=True, api_key=KEY, per_minute=10, per_day=500)
    row = db.session.get_one(AISettings, owner.workspace_id)
    row.last_error, row.last_error_at = "auth", utcnow() - timedelta(minutes=3)
    row.last_error_detail = "400 INVALID_ARGUMENT: API key not valid."
    now = utcnow()
    earlier = now - timedelta(minutes=5)
    db.session.add_all([AICall(workspace_id=owner.workspace_id, at=now) for _ in range(2)])
    db.session.add(AICall(workspace_id=owner.workspace_id, at=earlier))
    db.session.commit()
    today = 3 if earlier >= day_start(get_workspace(owner.workspace_id).timezone, now) else 2  # near midnight
    page = html.unescape(logged_in.get(PAGE).get_data(as_text=True))
    assert "The AI could not answer: Gemini refused the API key." in page
    assert "Check the API key below" in page and "API key not valid." in page
    assert '<dd id="ai-used-minute">2 of 10</dd>' in page
    assert f'<dd id="ai-used-day">{today} of 500</dd>' in page


def test_the_page_says_when_the_knowledge_is_longer_than_a_request_takes(
    app: Flask, logged_in: FlaskClient, owner: factories.Person
) -> None:
    from crm.ai.settings import update_settings

    update_settings(owner.workspace_id, knowledge="Preços. " * 100)
    assert "go with each question" not in logged_in.get("/settings/ai").get_data(as_text=True)
    app.config["AI_CONTEXT_TOKENS"] = 200
    try:
        page = logged_in.get("/settings/ai").get_data(as_text=True)
    finally:
        app.config["AI_CONTEXT_TOKENS"] = 32000
    assert "go with each question" in page
