"""Settings → AI replies, as people see them: can the bot answer now (and if not, why), what it
costs so far today, and saving the page's settings together with the per-number switches.

The rules themselves (limits, defaults, what a valid value is) live in ``crm.ai.settings``; this
module only reads them for the pages and writes the page in one commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from flask_babel import gettext as _

from crm.ai import budget
from crm.ai.models import AISettings
from crm.ai.settings import handoff_keywords, parse_handoff_keywords, settings_of, update_settings
from crm.auth.models import Membership
from crm.crypto import SecretUnreadable, decrypt_json
from crm.db import utcnow
from crm.errors import DomainError, Forbidden
from crm.extensions import db
from crm.whatsapp.accounts import list_accounts
from crm.whatsapp.models import WhatsAppAccount


def error_text(code: str | None) -> str:
    """Why the AI could not answer, in a few words (thread badges, drafts, the settings page)."""
    texts = {
        "no_key": _("there is no Gemini API key"),
        "rate_limited": _("Gemini's rate limit was hit and the retries ran out"),
        "daily_quota": _("Gemini's daily quota is spent"),
        "server": _("Gemini had a server error"),
        "timeout": _("Gemini took too long to answer"),
        "network": _("Gemini could not be reached"),
        "auth": _("Gemini refused the API key"),
        "bad_request": _("Gemini refused the request"),
        "blocked": _("Gemini's safety filters blocked the answer"),
        "empty": _("Gemini gave an empty answer"),
        "budget_day": _("the workspace's requests for today are used up"),
        "budget_minute": _("the workspace's requests for this minute are used up"),
        "paused": _("AI replies are paused for today"),
        "nothing_to_answer": _("there is nothing to answer in this conversation yet"),
        "gave_up": _("no draft arrived in time"),
        "ai_off": _("AI replies are off in this workspace"),
    }
    if not code:
        return _("an unknown error")
    return texts.get(code) or _("an unexpected error (%(code)s)", code=code)


def error_advice(code: str | None) -> str:
    """What an admin can do about it (the settings page), or "" when waiting is the answer."""
    advice = {
        "no_key": _("Enter a Gemini API key below, or set GEMINI_API_KEY on the server."),
        "auth": _("Check the API key below: it may be mistyped, revoked or lack access to the Gemini API."),
        "bad_request": _("Check the model name below: Gemini may not offer it to this key."),
        "daily_quota": _("The quota resets at midnight Pacific time. A paid Gemini plan has larger quotas."),
        "rate_limited": _("Lower the requests per minute below, or use a Gemini plan with higher limits."),
        "budget_day": _("Raise the requests per day below if the bill allows it."),
        "budget_minute": _("Raise the requests per minute below if Gemini's limits allow it."),
        "blocked": _("Rephrase the instructions or knowledge if this keeps happening."),
    }
    return advice.get(code or "", "")


@dataclass(frozen=True)
class AIStatus:
    """What the status box and the inbox banner say."""

    enabled: bool
    key_source: str | None  # "workspace", "server", or None: no usable key
    own_key_unreadable: bool  # a key was saved but can't be decrypted (SECRET_KEY changed)
    paused_until: datetime | None  # only while the pause lasts
    last_error: str | None
    last_error_detail: str | None
    last_error_at: datetime | None
    per_minute: int
    per_day: int
    used: dict[str, int] | None  # requests this minute and today; None when not counted

    @property
    def problem(self) -> str | None:
        """Why replies that are on cannot be written now: "no_key", "paused", or None."""
        if not self.enabled:
            return None
        if self.key_source is None:
            return "no_key"
        if self.paused_until is not None:
            return "paused"
        return None


def _key_source(settings: AISettings) -> tuple[str | None, bool]:
    server_key = bool(current_app.config.get("GEMINI_API_KEY"))
    if settings.api_key_encrypted:
        try:
            own = bool(decrypt_json(settings.api_key_encrypted).get("api_key"))
        except SecretUnreadable:
            return ("server" if server_key else None), True
        if own:
            return "workspace", False
    return ("server" if server_key else None), False


def ai_status(workspace_id: int, timezone: str | None = None) -> AIStatus:
    """The state of the workspace's AI replies; with ``timezone`` (the workspace's), the requests
    counted this minute and today (two counts)."""
    settings = settings_of(workspace_id)
    source, unreadable = _key_source(settings)
    paused = settings.paused_until if settings.paused_until and settings.paused_until > utcnow() else None
    return AIStatus(
        enabled=settings.enabled,
        key_source=source,
        own_key_unreadable=unreadable,
        paused_until=paused,
        last_error=settings.last_error,
        last_error_detail=settings.last_error_detail,
        last_error_at=settings.last_error_at,
        per_minute=settings.per_minute,
        per_day=settings.per_day,
        used=budget.used(workspace_id, timezone) if timezone else None,
    )


def ai_problem(workspace_id: int) -> AIStatus | None:
    """The status when AI replies are on but cannot answer (the inbox banner), else None."""
    status = ai_status(workspace_id)
    return status if status.problem else None


def knowledge_room_chars(workspace_id: int) -> int:
    """How much of the knowledge reaches Gemini with each question (AI_CONTEXT_TOKENS)."""
    from crm.ai.context import CHARS_PER_TOKEN, knowledge_room

    instructions = settings_of(workspace_id).instructions
    return knowledge_room(instructions, current_app.config["AI_CONTEXT_TOKENS"]) * CHARS_PER_TOKEN


def numbers(workspace_id: int) -> list[WhatsAppAccount]:
    return list_accounts(workspace_id)


def form_values(workspace_id: int) -> dict[str, Any]:
    """The saved settings as the page's form shows them."""
    settings = settings_of(workspace_id)
    return {
        "enabled": settings.enabled,
        "mode": settings.mode,
        "hours_days": [int(d) for d in settings.hours_days.split(",") if d],
        "hours_start": datetime.strptime(settings.hours_start, "%H:%M").time(),
        "hours_end": datetime.strptime(settings.hours_end, "%H:%M").time(),
        "model": settings.model,
        "instructions": settings.instructions,
        "knowledge": settings.knowledge,
        "fallback": settings.fallback or "",
        "handoff_keywords": ", ".join(handoff_keywords(settings)),
        "handoff_message": settings.handoff_message or "",
        "per_minute": settings.per_minute,
        "per_day": settings.per_day,
        "history_messages": settings.history_messages,
        "cache_hours": settings.cache_hours,
        "ai_numbers": [a.id for a in list_accounts(workspace_id) if a.ai_enabled],
    }


def save_page(
    workspace_id: int,
    actor: Membership,
    values: dict[str, Any],
    *,
    new_key: str | None,
    remove_key: bool,
    ai_numbers: set[int],
) -> AISettings:
    """Save the whole page in one commit: the settings and which numbers the bot answers on.

    Only a real change of "enabled" is passed on (turning the bot on clears a pause and the last
    error; re-saving the page while it is on must not), and the hand-off keywords only when they
    differ from the current ones (an untouched list keeps following our defaults). A typed key
    replaces the saved one; ``remove_key`` without one removes it. On any refusal nothing is
    written, the number switches included."""
    if not actor.role_enum.manages_team:
        raise Forbidden()
    current = settings_of(workspace_id)
    changes = dict(values)
    enabled = bool(changes.pop("enabled", current.enabled))
    keywords = str(changes.pop("handoff_keywords", "") or "")
    try:
        if enabled != current.enabled:
            changes["enabled"] = enabled
        if parse_handoff_keywords(keywords) != handoff_keywords(current):
            changes["handoff_keywords"] = keywords
        if new_key:
            changes["api_key"] = new_key
        elif remove_key:
            changes["api_key"] = ""
        for account in list_accounts(workspace_id):
            account.ai_enabled = account.id in ai_numbers
        return update_settings(workspace_id, **changes)  # commits the numbers with it
    except DomainError:
        db.session.rollback()  # update_settings may have set some fields before refusing one
        raise
