"""AI replies in the inbox: the conversation's bot switch (and its live update), the badges on
messages the AI wrote, "suggest reply" through the real SDK against the Gemini stub, and the
hand-off notice pushed to the team."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from crm.ai.models import AISuggestion
from crm.ai.settings import update_settings
from crm.extensions import db
from crm.inbox import services as inbox
from crm.inbox.models import Conversation, ConversationNote, Message
from crm.realtime import broker
from crm.realtime.fragments import render_event
from tests import factories
from tests.conftest import GEMINI_KEY as KEY
from tests.conftest import csrf_from, hx, login
from tests.fakes.gemini import GeminiStub, Outcome


@pytest.fixture
def no_key(app: Flask) -> Iterator[None]:
    saved = app.config.get("GEMINI_API_KEY")
    app.config["GEMINI_API_KEY"] = None
    yield
    app.config["GEMINI_API_KEY"] = saved


def ai_on(person: factories.Person) -> None:
    update_settings(person.workspace_id, enabled=True)


def thread(client: FlaskClient, conversation_id: int) -> str:
    return client.get(f"/conversations/{conversation_id}", headers={"HX-Request": "true"}).get_data(
        as_text=True
    )


def post(client: FlaskClient, path: str, **data: str) -> Any:
    headers = {"HX-Request": "true", "X-CSRFToken": csrf_from(client, "/")}
    return client.post(path, data=data, headers=headers)


def outbound_count(conversation_id: int) -> int:
    return (
        db.session.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.conversation_id == conversation_id, Message.direction == "out")
        )
        or 0
    )


# --- the bot switch ----------------------------------------------------------------------------


def test_no_bot_switch_nor_suggestions_while_ai_replies_are_off(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    page = thread(logged_in, factories.conversation(owner))
    assert 'role="switch"' not in page and "Suggest reply" not in page


def test_the_bot_switch_turns_the_bot_off_and_on(logged_in: FlaskClient, owner: factories.Person) -> None:
    conversation_id = factories.conversation(owner)
    ai_on(owner)
    page = thread(logged_in, conversation_id)
    assert 'aria-checked="true"' in page and "Bot on" in page and "Suggest reply" in page

    response = post(logged_in, f"/conversations/{conversation_id}/bot", enabled="0")
    header = response.get_data(as_text=True)
    assert response.status_code == 200
    assert header.lstrip().startswith(f'<header class="thread-header" id="thread-header-{conversation_id}"')
    assert "Bot off" in header and 'aria-checked="false"' in header
    assert db.session.get_one(Conversation, conversation_id).ai_enabled is False

    assert "Bot on" in post(logged_in, f"/conversations/{conversation_id}/bot", enabled="1").get_data(
        as_text=True
    )
    assert db.session.get_one(Conversation, conversation_id).ai_enabled is True
    assert hx(logged_in, "POST", f"/conversations/{conversation_id}/bot", enabled="maybe") == 400
    assert db.session.get_one(Conversation, conversation_id).ai_enabled is True


def test_an_agent_can_switch_the_bot_too(client: FlaskClient, owner: factories.Person) -> None:
    conversation_id = factories.conversation(owner)
    ai_on(owner)
    login(client, factories.person("Acme", "agent@acme.example").email)
    assert post(client, f"/conversations/{conversation_id}/bot", enabled="0").status_code == 200
    assert db.session.get_one(Conversation, conversation_id).ai_enabled is False


def test_another_workspaces_conversation_is_not_found(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    ai_on(owner)
    other = factories.person("Other", "o@other.example", role="owner")
    theirs = factories.conversation(other)
    update_settings(other.workspace_id, enabled=True)
    assert hx(logged_in, "POST", f"/conversations/{theirs}/bot", enabled="0") == 404
    assert db.session.get_one(Conversation, theirs).ai_enabled is True
    assert hx(logged_in, "POST", f"/conversations/{theirs}/suggestions") == 404
    assert db.session.scalar(select(func.count()).select_from(AISuggestion)) == 0


def test_the_switch_reaches_every_open_inbox(
    app: Flask, logged_in: FlaskClient, owner: factories.Person
) -> None:
    conversation_id = factories.conversation(owner)
    ai_on(owner)
    heard: list[dict[str, Any]] = []
    unsubscribe = broker.subscribe_local(lambda ws, e: heard.append(e) if ws == owner.workspace_id else None)
    try:
        post(logged_in, f"/conversations/{conversation_id}/bot", enabled="0")
    finally:
        unsubscribe()
    updates = [e for e in heard if e["type"] == "conversation.updated"]
    assert [e["conversation_id"] for e in updates] == [conversation_id]
    with app.test_request_context("/ws"):
        fragment = render_event(owner.workspace_id, updates[0], manager=False, user_id=0)
    assert fragment and f'id="thread-header-{conversation_id}" hx-swap-oob="true"' in fragment
    assert "Bot off" in fragment


def test_an_agents_reply_shows_the_bot_stopped_in_every_open_inbox(
    app: Flask, logged_in: FlaskClient, owner: factories.Person
) -> None:
    conversation_id = factories.conversation(owner)
    ai_on(owner)
    heard: list[dict[str, Any]] = []
    unsubscribe = broker.subscribe_local(lambda ws, e: heard.append(e) if ws == owner.workspace_id else None)
    try:
        post(logged_in, f"/conversations/{conversation_id}/messages", text="Oi, aqui é a Ana!")
    finally:
        unsubscribe()
    assert db.session.get_one(Conversation, conversation_id).ai_enabled is False
    created = next(e for e in heard if e["type"] == "message.created")
    with app.test_request_context("/ws"):
        fragment = render_event(owner.workspace_id, created, manager=False, user_id=0)
    assert fragment and f'id="thread-header-{conversation_id}"' in fragment and "Bot off" in fragment


# --- what the AI wrote, marked -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("author", "payload", "badge"),
    [
        ("ai", {"ai": {}}, ">AI<"),
        ("ai", {"ai": {"cached": True}}, "AI · cached"),
        ("ai", {"ai": {"handoff": "keyword"}}, "AI · handed off"),
        (
            "fallback",
            {"ai": {"error": "no_key", "detail": ""}},
            "Fallback: AI could not answer — there is no Gemini API key",
        ),
        (
            "fallback",
            {"ai": {"error": "daily_quota", "detail": "429 RESOURCE_EXHAUSTED"}},
            "Fallback: AI could not answer — Gemini's daily quota is spent",
        ),
        ("fallback", {"ai": {"error": "something_new"}}, "an unexpected error (something_new)"),
    ],
)
def test_messages_written_by_the_ai_are_marked(
    logged_in: FlaskClient, owner: factories.Person, author: str, payload: dict[str, Any], badge: str
) -> None:
    conversation_id = factories.conversation(owner)
    message_id = factories.stored_message(
        conversation_id, "Abrimos às 9h.", direction="out", author=author, payload=payload
    )
    page = html.unescape(thread(logged_in, conversation_id))
    bubble = page[page.index(f'id="message-{message_id}"') :]
    bubble = bubble[: bubble.index("</div>")]
    assert badge in bubble and f"author-{author}" in page


def test_an_agents_message_has_no_ai_badge(logged_in: FlaskClient, owner: factories.Person) -> None:
    conversation_id = factories.conversation(owner)
    factories.stored_message(conversation_id, "Oi!", direction="out")
    assert "ai-badge" not in thread(logged_in, conversation_id)


def test_a_note_the_bot_left_shows_zapdesk_as_its_author(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    conversation_id = factories.conversation(owner)
    db.session.add(
        ConversationNote(
            workspace_id=owner.workspace_id,
            conversation_id=conversation_id,
            text="The customer asked for a person: the bot stopped in this conversation.",
        )
    )
    db.session.commit()
    page = thread(logged_in, conversation_id)
    assert "note-system" in page and re.search(r"<small class=\"muted\">Zapdesk · ", page)


# --- suggest reply ------------------------------------------------------------------------------


def test_suggest_reply_puts_a_draft_in_the_composer_and_sends_nothing(
    logged_in: FlaskClient, owner: factories.Person, gemini: GeminiStub
) -> None:
    conversation_id = factories.inbound(factories.sandbox_account(owner), text="Quanto custa o corte?")
    ai_on(owner)
    gemini.set_default(Outcome.answer("Olá! O corte custa R$ 50. Quer agendar?"))
    response = post(logged_in, f"/conversations/{conversation_id}/suggestions")
    fragment = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 200
    # The worker ran inline (tests): the draft is ready at once, for the page to put in the box.
    assert 'data-suggestion-text="Olá! O corte custa R$ 50. Quer agendar?"' in fragment
    assert f'data-target="#composer-text-{conversation_id}"' in fragment
    assert outbound_count(conversation_id) == 0  # nothing sent
    call = gemini.calls[-1]
    assert call.header("x-goog-api-key") == KEY and "Quanto custa o corte?" in call.last_user_text
    suggestion = db.session.scalar(select(AISuggestion))
    assert suggestion is not None and suggestion.status == "ready" and suggestion.user_id == owner.user_id
    again = logged_in.get(f"/conversations/{conversation_id}/suggestions/{suggestion.id}")
    assert "data-suggestion-text" in again.get_data(as_text=True)


def test_a_pending_draft_polls_until_it_gives_up(logged_in: FlaskClient, owner: factories.Person) -> None:
    conversation_id = factories.conversation(owner)
    ai_on(owner)
    suggestion = AISuggestion(
        workspace_id=owner.workspace_id, conversation_id=conversation_id, user_id=owner.user_id
    )
    db.session.add(suggestion)
    db.session.commit()
    path = f"/conversations/{conversation_id}/suggestions/{suggestion.id}"
    polling = logged_in.get(path).get_data(as_text=True)
    assert f'hx-get="{path}?n=1"' in polling and 'hx-trigger="load delay:1s"' in polling
    assert 'hx-swap="outerHTML"' in polling and "Writing a draft" in polling
    assert f'hx-get="{path}?n=6"' in logged_in.get(f"{path}?n=5").get_data(as_text=True)
    given_up = logged_in.get(f"{path}?n=90").get_data(as_text=True)
    assert "hx-get" not in given_up and "No draft: no draft arrived in time." in given_up


def test_a_draft_is_only_for_whoever_asked_for_it(logged_in: FlaskClient, owner: factories.Person) -> None:
    conversation_id = factories.conversation(owner)
    suggestion = AISuggestion(
        workspace_id=owner.workspace_id, conversation_id=conversation_id, user_id=owner.user_id
    )
    db.session.add(suggestion)
    db.session.commit()
    path = f"/conversations/{conversation_id}/suggestions/{suggestion.id}"
    assert logged_in.get(path).status_code == 200
    other = factories.conversation(owner)  # the right person, the wrong conversation
    assert logged_in.get(f"/conversations/{other}/suggestions/{suggestion.id}").status_code == 404
    colleague = logged_in.application.test_client()
    login(colleague, factories.person("Acme", "agent@acme.example").email)
    assert colleague.get(path).status_code == 404


def test_without_a_key_the_draft_fails_with_the_reason(
    logged_in: FlaskClient, owner: factories.Person, no_key: None
) -> None:
    conversation_id = factories.inbound(factories.sandbox_account(owner), text="Oi")
    ai_on(owner)
    fragment = html.unescape(
        post(logged_in, f"/conversations/{conversation_id}/suggestions").get_data(as_text=True)
    )
    assert 'role="alert"' in fragment and "No draft: there is no Gemini API key." in fragment
    assert "data-suggestion-text" not in fragment


def test_gemini_failing_is_a_short_reason_too(
    logged_in: FlaskClient, owner: factories.Person, gemini: GeminiStub
) -> None:
    conversation_id = factories.inbound(factories.sandbox_account(owner), text="Oi")
    ai_on(owner)
    gemini.set_default(Outcome.invalid_key())
    fragment = html.unescape(
        post(logged_in, f"/conversations/{conversation_id}/suggestions").get_data(as_text=True)
    )
    assert "No draft: Gemini refused the API key." in fragment


def test_no_drafts_while_ai_replies_are_off(
    logged_in: FlaskClient, owner: factories.Person, gemini: GeminiStub
) -> None:
    conversation_id = factories.conversation(owner)
    fragment = post(logged_in, f"/conversations/{conversation_id}/suggestions").get_data(as_text=True)
    assert "AI replies are off in this workspace" in fragment
    assert gemini.call_count == 0 and db.session.scalar(select(func.count()).select_from(AISuggestion)) == 0


# --- the hand-off, told to the team -------------------------------------------------------------


@pytest.mark.parametrize(
    ("by", "said"), [("keyword", "Cliente asked for a person"), ("ai", "Cliente needs a person")]
)
def test_a_hand_off_is_a_notice_in_every_open_inbox(
    app: Flask, owner: factories.Person, by: str, said: str
) -> None:
    conversation_id = factories.conversation(owner)  # the customer is called "Cliente"
    event = {"type": "conversation.handoff", "conversation_id": conversation_id, "by": by, "eid": "abc123"}
    with app.test_request_context("/ws"):
        fragment = render_event(owner.workspace_id, event, manager=False, user_id=owner.user_id)
        other = factories.person("Other", "o@other.example", role="owner")
        assert render_event(other.workspace_id, event, manager=False, user_id=other.user_id) is None
    assert fragment and 'hx-swap-oob="beforeend:#notices"' in fragment
    assert said in fragment and f'href="/conversations/{conversation_id}"' in fragment
    assert 'id="notice-abc123"' in fragment


def test_the_inbox_page_has_a_place_for_notices(logged_in: FlaskClient) -> None:
    assert 'id="notices"' in logged_in.get("/").get_data(as_text=True)


def test_the_api_switch_also_updates_the_inbox(owner: factories.Person) -> None:
    conversation_id = factories.conversation(owner)
    heard: list[dict[str, Any]] = []
    unsubscribe = broker.subscribe_local(lambda ws, e: heard.append(e))
    try:
        inbox.set_ai_enabled(owner.workspace_id, conversation_id, False)
    finally:
        unsubscribe()
    assert {"type": "conversation.updated", "conversation_id": conversation_id}.items() <= heard[0].items()
