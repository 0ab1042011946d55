""" "Suggest reply": Gemini drafts the business's next message for an agent to edit and send.

The agent's click writes a row and queues a task (the web never calls Gemini); the composer
polls the row until the draft is there. Drafts count against the workspace's budget.
"""

from __future__ import annotations

import logging

from flask import current_app
from sqlalchemy import select

from crm.ai import budget
from crm.ai.context import build
from crm.ai.gemini import GeminiError, Turn, generate
from crm.ai.models import AISuggestion
from crm.ai.settings import api_key, settings_of
from crm.auth.models import Workspace
from crm.db import after_commit, utcnow
from crm.extensions import db

log = logging.getLogger(__name__)

DRAFT_REQUEST = (
    'Above is a WhatsApp conversation between a customer and the business ("Us"). Draft the '
    "business's next message to the customer, in the customer's language, for a person on the "
    "team to review and send. Answer with the message only."
)


def request_suggestion(workspace_id: int, conversation_id: int, user_id: int) -> AISuggestion:
    """A new draft request (committed) whose task runs once committed."""
    from crm.ai.tasks import suggest_task
    from crm.inbox.services import get_conversation

    get_conversation(workspace_id, conversation_id)  # 404 for another workspace's
    suggestion = AISuggestion(
        workspace_id=workspace_id, conversation_id=conversation_id, user_id=user_id, status="pending"
    )
    db.session.add(suggestion)
    db.session.flush()
    suggestion_id = suggestion.id
    after_commit(lambda: suggest_task(suggestion_id))
    db.session.commit()
    return suggestion


def get_suggestion(workspace_id: int, suggestion_id: int, user_id: int) -> AISuggestion | None:
    return db.session.scalar(
        select(AISuggestion).where(
            AISuggestion.id == suggestion_id,
            AISuggestion.workspace_id == workspace_id,
            AISuggestion.user_id == user_id,
        )
    )


def _transcript(turns: list[Turn]) -> str:
    lines = [f"{'Customer' if t.role == 'user' else 'Us'}: {t.text}" for t in turns]
    return "\n".join(lines)


def write_suggestion(suggestion_id: int) -> str:
    suggestion = db.session.get(AISuggestion, suggestion_id)
    if suggestion is None or suggestion.status != "pending":
        return "settled"
    workspace = db.session.get_one(Workspace, suggestion.workspace_id)
    settings = settings_of(workspace.id)
    key = api_key(settings)
    if not key:
        return _failed(suggestion, "no_key")
    if db.session.get(type(settings), workspace.id) is None:
        db.session.add(settings)  # the budget locks the settings row: make sure there is one
    db.session.commit()
    grant = budget.take(workspace.id, settings.per_minute, settings.per_day, workspace.timezone)
    if grant.call_id is None:
        return _failed(suggestion, "budget_day" if grant.day_spent else "budget_minute")
    config = current_app.config
    system, history = build(
        settings, workspace, suggestion.conversation_id, None, utcnow(), config["AI_CONTEXT_TOKENS"], False
    )
    if not history:
        budget.record_outcome(grant.call_id, "unused")
        return _failed(suggestion, "nothing_to_answer")
    try:
        answer = generate(
            key,
            config.get("GEMINI_BASE_URL"),
            settings.model,
            system,
            [Turn("user", f"{_transcript(history)}\n\n{DRAFT_REQUEST}")],
            config["AI_TIMEOUT_SECONDS"],
            structured=False,
        )
    except GeminiError as exc:
        log.warning("suggestion %s: Gemini failed: %s", suggestion_id, exc)
        budget.record_outcome(grant.call_id, exc.kind)
        return _failed(suggestion, exc.kind)
    budget.record_outcome(grant.call_id, "ok")
    suggestion.status, suggestion.text = "ready", answer.reply
    db.session.commit()
    return "ready"


def _failed(suggestion: AISuggestion, why: str) -> str:
    suggestion.status, suggestion.error = "failed", why
    db.session.commit()
    return f"failed:{why}"
