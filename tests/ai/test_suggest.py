""" "Suggest reply": a draft for the agent, never sent by itself, within the budget."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import func, select

from crm.ai.models import AICall
from crm.ai.suggest import get_suggestion, request_suggestion
from crm.extensions import db
from crm.inbox.services import set_ai_enabled
from tests.ai.conftest import Bot
from tests.fakes.gemini import GeminiStub, Outcome


def test_a_draft_from_the_conversation(bot: Bot, gemini: GeminiStub) -> None:
    conversation_id = bot.say("Quanto custa o corte?")
    set_ai_enabled(bot.workspace_id, conversation_id, False)
    sent_before = len(bot.replies(conversation_id))
    gemini.script(Outcome.answer("Olá! O corte custa R$ 50."))

    suggestion = request_suggestion(bot.workspace_id, conversation_id, bot.person.user_id)
    found = get_suggestion(bot.workspace_id, suggestion.id, bot.person.user_id)
    assert found is not None and (found.status, found.text) == ("ready", "Olá! O corte custa R$ 50.")
    call = gemini.calls[-1]
    assert not call.wants_json
    assert "Customer: Quanto custa o corte?" in call.texts[-1][1]
    assert "Us: Bot: Quanto custa o corte?" in call.texts[-1][1]
    assert len(bot.replies(conversation_id)) == sent_before  # nothing sent
    assert db.session.scalar(select(func.count()).select_from(AICall)) == 2  # the answer and the draft
    assert get_suggestion(bot.workspace_id, suggestion.id, bot.person.user_id + 1) is None  # someone else's


def test_a_draft_fails_clearly(bot: Bot, gemini: GeminiStub, app: Flask) -> None:
    conversation_id = bot.say("Oi")
    gemini.script(Outcome.internal())
    failed = request_suggestion(bot.workspace_id, conversation_id, bot.person.user_id)
    db.session.refresh(failed)
    assert (failed.status, failed.error) == ("failed", "server")
    app.config["GEMINI_API_KEY"] = None
    no_key = request_suggestion(bot.workspace_id, conversation_id, bot.person.user_id)
    db.session.refresh(no_key)
    assert (no_key.status, no_key.error) == ("failed", "no_key")
