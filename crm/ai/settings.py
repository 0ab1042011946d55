"""A workspace's AI settings: reading them (with defaults), changing them, and the cheap "does AI
answer this message?" gate on the inbound path."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import force_locale, format_number
from flask_babel import gettext as _
from sqlalchemy import select

from crm.ai.models import DEFAULT_MODEL, MODES, AISettings
from crm.auth.models import Workspace
from crm.crypto import SecretUnreadable, decrypt_json, encrypt_json
from crm.db import utcnow
from crm.errors import ValidationFailed
from crm.extensions import db
from crm.leads.consent import normalise_keyword
from crm.textcheck import check_clean_text

DEFAULT_HANDOFF_KEYWORDS = (
    "ATENDENTE",
    "HUMANO",
    "FALAR COM ATENDENTE",
    "AGENT",
    "HUMAN",
    "REPRESENTATIVE",
    "AGENTE",
    "ASESOR",
)
MAX_KNOWLEDGE_CHARS = 200_000
MAX_INSTRUCTIONS_CHARS = 10_000
MAX_TEXT_CHARS = 2_000
MAX_KEYWORDS = 50
MAX_PER_MINUTE = 10_000
MAX_PER_DAY = 10_000_000
_TIME = "%H:%M"


def settings_of(workspace_id: int) -> AISettings:
    """The workspace's settings row (a transient one with the defaults when none was saved)."""
    found = db.session.get(AISettings, workspace_id)
    if found is not None:
        return found
    return AISettings(
        workspace_id=workspace_id,
        enabled=False,
        mode="always",
        model=DEFAULT_MODEL,
        instructions="",
        knowledge="",
        per_minute=10,
        per_day=500,
        history_messages=20,
        hours_days="0,1,2,3,4",
        hours_start="08:00",
        hours_end="18:00",
        cache_hours=24,
        version=1,
    )


def api_key(settings: AISettings) -> str | None:
    """The workspace's own key, else GEMINI_API_KEY; None when there is neither."""
    if settings.api_key_encrypted:
        try:
            own = decrypt_json(settings.api_key_encrypted).get("api_key")
        except SecretUnreadable:
            own = None
        if own:
            return str(own)
    return current_app.config.get("GEMINI_API_KEY") or None


def has_own_key(settings: AISettings) -> bool:
    return bool(settings.api_key_encrypted)


def handoff_keywords(settings: AISettings) -> list[str]:
    if settings.handoff_keywords is None:
        return list(DEFAULT_HANDOFF_KEYWORDS)
    return parse_handoff_keywords(settings.handoff_keywords)


def parse_handoff_keywords(raw: str) -> list[str]:
    words: list[str] = []
    for part in check_clean_text(raw, code="invalid_keywords").replace("\n", ",").split(","):
        word = normalise_keyword(part)
        if word and word not in words:
            if len(word) > 60:
                raise ValidationFailed(
                    _("A keyword can have at most %(n)d characters.", n=60), code="invalid_keywords"
                )
            words.append(word)
    if len(words) > MAX_KEYWORDS:
        raise ValidationFailed(_("At most %(n)d keywords.", n=MAX_KEYWORDS), code="invalid_keywords")
    return words


def fallback_text(settings: AISettings, workspace: Workspace) -> str:
    if settings.fallback and settings.fallback.strip():
        return settings.fallback.strip()
    with force_locale(workspace.locale):
        return _("Thanks for your message! Our team will get back to you as soon as possible.")


def handoff_text(settings: AISettings, workspace: Workspace) -> str:
    if settings.handoff_message and settings.handoff_message.strip():
        return settings.handoff_message.strip()
    with force_locale(workspace.locale):
        return _("Sure, I am passing you to a person on our team. They will answer here shortly.")


def default_texts(workspace: Workspace) -> dict[str, str]:
    blank = AISettings()
    return {"fallback": fallback_text(blank, workspace), "handoff": handoff_text(blank, workspace)}


# --- changing them ---------------------------------------------------------------------------


def _bounded_int(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValidationFailed(
            _("%(name)s must be a whole number.", name=name), code="invalid_number"
        ) from None
    if not low <= number <= high:
        raise ValidationFailed(
            _("%(name)s must be between %(low)d and %(high)d.", name=name, low=low, high=high),
            code="invalid_number",
        )
    return number


def _clock(value: Any, name: str) -> str:
    try:
        return datetime.strptime(str(value).strip(), _TIME).strftime(_TIME)
    except ValueError:
        raise ValidationFailed(
            _("%(name)s must be a time like 08:30.", name=name), code="invalid_time"
        ) from None


def _days(value: Any) -> str:
    raw = value if isinstance(value, list | tuple) else str(value or "").split(",")
    days: set[int] = set()
    for part in raw:
        part = str(part).strip()
        if not part:
            continue
        if not part.isdigit() or not 0 <= int(part) <= 6:
            raise ValidationFailed(_("Business days must be weekdays."), code="invalid_days")
        days.add(int(part))
    return ",".join(str(d) for d in sorted(days))


def update_settings(workspace_id: int, **changes: Any) -> AISettings:
    """Change some settings (only the names given), validated; commits. Unknown names are a bug."""
    try:
        settings = _apply(workspace_id, changes)
    except ValidationFailed:
        db.session.rollback()  # nothing half-changed stays in the session
        raise
    db.session.commit()
    forget_gate(workspace_id)
    return settings


def _apply(workspace_id: int, changes: dict[str, Any]) -> AISettings:
    settings = db.session.get(AISettings, workspace_id)
    if settings is None:
        settings = settings_of(workspace_id)
        db.session.add(settings)
    for name, value in changes.items():
        if name == "enabled":
            settings.enabled = bool(value)
        elif name == "mode":
            if value not in MODES:
                raise ValidationFailed(_("Choose when the AI answers."), code="invalid_mode")
            settings.mode = value
        elif name == "model":
            model = check_clean_text(str(value or "")).strip().removeprefix("models/")
            if not model or len(model) > 80 or any(ch.isspace() or ch in "/?#:" for ch in model):
                raise ValidationFailed(_("Give the name of a Gemini model."), code="invalid_model")
            settings.model = model
        elif name in ("instructions", "knowledge"):
            text = check_clean_text(str(value or "")).strip()
            limit = MAX_INSTRUCTIONS_CHARS if name == "instructions" else MAX_KNOWLEDGE_CHARS
            if len(text) > limit:
                raise ValidationFailed(
                    _("This text can have at most %(n)s characters.", n=format_number(limit)),
                    code="text_too_long",
                )
            setattr(settings, name, text)
        elif name in ("fallback", "handoff_message"):
            text = check_clean_text(str(value or "")).strip()
            if len(text) > MAX_TEXT_CHARS:
                raise ValidationFailed(
                    _("This text can have at most %(n)s characters.", n=format_number(MAX_TEXT_CHARS)),
                    code="text_too_long",
                )
            setattr(settings, name, text or None)
        elif name == "handoff_keywords":
            settings.handoff_keywords = ", ".join(parse_handoff_keywords(str(value or "")))
        elif name == "per_minute":
            settings.per_minute = _bounded_int(value, _("Requests per minute"), 1, MAX_PER_MINUTE)
        elif name == "per_day":
            settings.per_day = _bounded_int(value, _("Requests per day"), 1, MAX_PER_DAY)
        elif name == "history_messages":
            settings.history_messages = _bounded_int(value, _("Messages of context"), 1, 100)
        elif name == "cache_hours":
            settings.cache_hours = _bounded_int(value, _("Hours an answer is reused"), 0, 24 * 30)
        elif name == "hours_start":
            settings.hours_start = _clock(value, _("Opening time"))
        elif name == "hours_end":
            settings.hours_end = _clock(value, _("Closing time"))
        elif name == "hours_days":
            settings.hours_days = _days(value)
        elif name == "api_key":
            key = check_clean_text(str(value or "")).strip()
            if len(key) > 200 or any(ch.isspace() for ch in key):
                raise ValidationFailed(_("This is not an API key."), code="invalid_api_key")
            settings.api_key_encrypted = encrypt_json({"api_key": key}) if key else None
        else:
            raise TypeError(f"unknown AI setting {name}")
    if settings.mode == "after_hours" and not settings.hours_days:
        raise ValidationFailed(_("Pick at least one business day."), code="invalid_days")
    settings.version = (settings.version or 1) + 1
    settings.updated_at = utcnow()
    if changes.get("enabled") or "api_key" in changes:
        settings.paused_until, settings.pause_reason = None, None
        settings.last_error, settings.last_error_detail, settings.last_error_at = None, None, None
    return settings


def settings_json(settings: AISettings) -> dict[str, Any]:
    return {
        "enabled": settings.enabled,
        "mode": settings.mode,
        "model": settings.model,
        "instructions": settings.instructions,
        "fallback": settings.fallback,
        "per_minute": settings.per_minute,
        "per_day": settings.per_day,
        "knowledge_chars": len(settings.knowledge or ""),
        "handoff_keywords": handoff_keywords(settings),
        "handoff_message": settings.handoff_message,
        "history_messages": settings.history_messages,
        "business_hours": {
            "days": [int(d) for d in settings.hours_days.split(",") if d],
            "start": settings.hours_start,
            "end": settings.hours_end,
        },
        "cache_hours": settings.cache_hours,
        "own_api_key": has_own_key(settings),
    }


# --- is the bot on for this message? -----------------------------------------------------------


def within_business_hours(settings: AISettings, timezone: str, at: datetime) -> bool:
    local = at.astimezone(ZoneInfo(timezone))
    days = {int(d) for d in settings.hours_days.split(",") if d}
    now = local.strftime(_TIME)
    start, end = settings.hours_start, settings.hours_end
    if start <= end:
        return local.weekday() in days and start <= now < end
    # Open past midnight: the small hours belong to the day before's opening.
    if now >= start:
        return local.weekday() in days
    return now < end and (local - timedelta(days=1)).weekday() in days


@dataclass(frozen=True)
class Gate:
    enabled: bool
    mode: str
    timezone: str
    settings: AISettings | None  # detached copy, for the business hours

    def answers(self, assignee_id: int | None, at: datetime) -> bool:
        if not self.enabled:
            return False
        if self.mode == "unassigned":
            return assignee_id is None
        if self.mode == "after_hours" and self.settings is not None:
            return not within_business_hours(self.settings, self.timezone, at)
        return True


# The inbound path asks for every customer message whether the bot answers it: the answer is kept
# per process for a short while (the task checks the settings again before answering).
GATE_TTL = 10.0
_gates: dict[int, tuple[float, Gate]] = {}


def gate(workspace_id: int) -> Gate:
    now = time.monotonic()
    cached = _gates.get(workspace_id)
    if cached is not None and now - cached[0] <= GATE_TTL:
        return cached[1]
    row = db.session.execute(
        select(AISettings, Workspace.timezone)
        .join(Workspace, Workspace.id == AISettings.workspace_id)
        .where(AISettings.workspace_id == workspace_id)
    ).first()
    if row is None or not row[0].enabled:
        found = Gate(False, "always", "UTC", None)
    else:
        settings, timezone = row
        copy = AISettings(
            hours_days=settings.hours_days, hours_start=settings.hours_start, hours_end=settings.hours_end
        )
        found = Gate(True, settings.mode, timezone, copy)
    _gates[workspace_id] = (now, found)
    return found


def forget_gate(workspace_id: int | None = None) -> None:
    if workspace_id is None:
        _gates.clear()
    else:
        _gates.pop(workspace_id, None)


def pause_until_tomorrow(settings: AISettings, reason: str) -> None:
    """Gemini's daily quota is spent: it resets at midnight Pacific time."""
    pacific = ZoneInfo("America/Los_Angeles")
    local = utcnow().astimezone(pacific)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=pacific)
    settings.paused_until = midnight
    settings.pause_reason = reason
