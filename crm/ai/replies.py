"""AI replies: exactly one answer per customer turn, never silent.

A customer's message that the bot should answer gets an ``ai_replies`` row in the same
transaction that stores the message (unique per message: a duplicate webhook adds nothing), and
a task on the AI queue after a short debounce. The task claims the row, and:

- skips it when the bot is off for the conversation, number or workspace, the mode says a person
  is on it, or a newer customer message came meanwhile (that one's task answers both);
- hands off to the team when the customer asks for a person (keywords, or Gemini says so);
- answers from the cache, or asks Gemini within the workspace's budget;
- on a 429 or a server error, gives the row back with a due time (Gemini's own delay, exponential
  backoff with jitter): the task never sleeps, so a backlog holds no worker thread;
- after the retry budget or the deadline, or on any other error, sends the fallback text.

Every answer goes through the outbox (the number's pacing) with the idempotency key
``ai:<message id>``, in the same transaction that settles the row: one reply, whatever happens.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from crm.ai import budget
from crm.ai.context import ANSWERED_TYPES, build, describe
from crm.ai.gemini import Answer, GeminiError, generate
from crm.ai.models import AICacheEntry, AIReply, AISettings
from crm.ai.settings import (
    api_key,
    fallback_text,
    gate,
    handoff_keywords,
    handoff_text,
    pause_until_tomorrow,
    settings_of,
    within_business_hours,
)
from crm.auth.models import Workspace
from crm.db import insert_ignoring_conflicts, utcnow
from crm.extensions import db
from crm.inbox.models import Conversation, ConversationNote, Message
from crm.inbox.sending import MAX_TEXT
from crm.leads.consent import opted_out
from crm.leads.models import Lead
from crm.realtime.broker import publish_after_commit
from crm.whatsapp.models import WhatsAppAccount

log = logging.getLogger(__name__)

OPEN = ("pending", "answering")
LEASE = timedelta(seconds=120)
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
MIN_CACHED_QUESTION = 12  # shorter messages ("ok", "sim", "and the price?") depend on the context


# --- on the inbound path ---------------------------------------------------------------------


def wants_answer(workspace_id: int, message_type: str, assignee_id: int | None) -> bool:
    """The cheap check for each stored customer message (cached settings, no query mostly)."""
    if message_type not in ANSWERED_TYPES:
        return False
    return gate(workspace_id).answers(assignee_id, utcnow())


def schedule(workspace_id: int, conversation_id: int, message_id: int) -> None:
    """Owe an answer to this message (in the caller's transaction), and queue it once committed."""
    config = current_app.config
    now = utcnow()
    due = now + timedelta(seconds=config["AI_DEBOUNCE_SECONDS"])
    reply_id = db.session.execute(
        insert_ignoring_conflicts(AIReply).returning(AIReply.id),
        {
            "workspace_id": workspace_id,
            "conversation_id": conversation_id,
            "message_id": message_id,
            "status": "pending",
            "attempts": 0,
            "due_at": due,
            "deadline_at": now + timedelta(seconds=config["AI_REPLY_DEADLINE_SECONDS"]),
            "created_at": now,
            "updated_at": now,
        },
    ).scalar()
    if reply_id is not None:
        enqueue_after_commit(reply_id, config["AI_DEBOUNCE_SECONDS"])


def enqueue_after_commit(reply_id: int, delay: float) -> None:
    from crm.db import after_commit

    after_commit(lambda: enqueue(reply_id, delay))


def enqueue(reply_id: int, delay: float) -> None:
    from crm.ai.tasks import answer_task

    if delay > 0:
        answer_task.schedule((reply_id,), delay=delay)
    else:
        answer_task(reply_id)


# --- the task ----------------------------------------------------------------------------------


@dataclass
class Job:
    reply: AIReply
    conversation: Conversation
    inbound: Message
    settings: AISettings
    workspace: Workspace


def lease() -> timedelta:
    """How long a claimed answer is its worker's: well past one Gemini request's timeout."""
    return max(LEASE, timedelta(seconds=3 * current_app.config["AI_TIMEOUT_SECONDS"] + 30))


def answer(reply_id: int) -> str:
    """Settle one owed answer, or give it back with a due time. Returns what happened."""
    now = utcnow()
    claimed = db.session.execute(
        update(AIReply)
        .where(
            AIReply.id == reply_id,
            AIReply.due_at <= now,
            or_(
                AIReply.status == "pending",
                and_(AIReply.status == "answering", AIReply.lease_until < now),
            ),
        )
        .values(status="answering", lease_until=now + lease(), updated_at=now)
    )
    db.session.commit()
    if not claimed.rowcount:  # type: ignore[attr-defined]
        return _not_claimed(reply_id, now)
    try:
        return _answer(reply_id, now)
    except Exception:  # a bug or the database: never leave the customer without an answer
        db.session.rollback()
        log.exception("ai reply %s failed unexpectedly", reply_id)
        return _after_crash(reply_id)


def _load(reply_id: int) -> Job | None:
    reply = db.session.get_one(AIReply, reply_id)
    conversation = db.session.get(Conversation, reply.conversation_id)
    inbound = db.session.get(Message, reply.message_id)
    workspace = db.session.get(Workspace, reply.workspace_id)
    if conversation is None or inbound is None or workspace is None:
        return None
    return Job(reply, conversation, inbound, settings_of(reply.workspace_id), workspace)


def _answer(reply_id: int, now: datetime) -> str:
    job = _load(reply_id)
    if job is None:
        return _settle(db.session.get_one(AIReply, reply_id), "skipped", "gone")
    why_not = _why_not(job, now)
    if why_not:
        return _settle(job.reply, "superseded" if why_not == "newer_message" else "skipped", why_not)
    if job.reply.attempts >= current_app.config["AI_MAX_ATTEMPTS"]:
        return _fallback(job, job.reply.error or "retries")  # it kept failing: stop trying
    turn = _turn(job)
    if not turn.text:
        return _settle(job.reply, "skipped", "nothing_to_answer")
    if _asks_for_person(job.settings, turn.text):
        return _hand_off(job, "keyword")
    return _ask(job, turn, now)


def _after_crash(reply_id: int) -> str:
    """An unexpected error: counted as an attempt and retried with backoff; past the attempts or
    the deadline, the fallback."""
    reply = db.session.get(AIReply, reply_id)
    if reply is None or reply.status != "answering":
        return "gone"
    attempt = reply.attempts + 1
    db.session.execute(update(AIReply).where(AIReply.id == reply_id).values(attempts=attempt))
    db.session.commit()
    delay = backoff(attempt, None)
    if (
        attempt >= current_app.config["AI_MAX_ATTEMPTS"]
        or utcnow() + timedelta(seconds=delay) >= reply.deadline_at
    ):
        job = _load(reply_id)
        if job is None:
            return _settle(reply, "skipped", "gone")
        return _fallback(job, "error")
    return _later(reply, delay, "error")


def _not_claimed(reply_id: int, now: datetime) -> str:
    """Someone else has it, it is settled, or it is not due yet (then it is queued for then:
    the reconciler or a duplicate job woke it early)."""
    reply = db.session.get(AIReply, reply_id)
    if reply is None:
        return "gone"
    if reply.status == "pending" and reply.due_at > now:
        enqueue((reply.id), (reply.due_at - now).total_seconds())
        return "not_due"
    return "taken" if reply.status == "answering" else "settled"


def _why_not(job: Job, now: datetime) -> str | None:
    conversation, settings = job.conversation, job.settings
    if _newer_job(job):
        return "newer_message"
    if not conversation.ai_enabled:
        return "bot_off"
    if not settings.enabled:
        return "ai_off"
    account = db.session.get(WhatsAppAccount, conversation.account_id)
    if account is None or not account.ai_enabled:
        return "number_off"
    if settings.mode == "unassigned" and conversation.assignee_id is not None:
        return "assigned"
    if settings.mode == "after_hours" and within_business_hours(settings, job.workspace.timezone, now):
        return "business_hours"
    lead = db.session.get(Lead, conversation.lead_id)
    if lead is None or opted_out(lead):
        return "opted_out"
    return _team_answered(job)


def _newer_job(job: Job) -> bool:
    """A later message of the customer has its own job: that one answers the whole turn (or has)."""
    newer = db.session.scalar(
        select(AIReply.id)
        .where(AIReply.conversation_id == job.conversation.id, AIReply.message_id > job.inbound.id)
        .limit(1)
    )
    return newer is not None


def _team_answered(job: Job) -> str | None:
    answered = db.session.scalar(
        select(Message.id)
        .where(
            Message.conversation_id == job.conversation.id,
            Message.direction == "out",
            Message.id > job.inbound.id,
            Message.author.in_(("agent", "api")),
        )
        .limit(1)
    )
    if answered is not None:
        return "answered_by_team"
    return None


@dataclass(frozen=True)
class Turn:
    text: str  # the customer's messages since the business last wrote
    first: bool  # nothing came before them in the conversation


def _turn(job: Job) -> Turn:
    """The customer's turn being answered: their messages since the business last wrote."""
    last_out = db.session.scalar(
        select(func.max(Message.id)).where(
            Message.conversation_id == job.conversation.id,
            Message.direction == "out",
            Message.id < job.inbound.id,
        )
    )
    query = select(Message).where(
        Message.conversation_id == job.conversation.id,
        Message.direction == "in",
        Message.id <= job.inbound.id,
    )
    if last_out is not None:
        query = query.where(Message.id > last_out)
    rows = db.session.scalars(query.order_by(Message.id.desc()).limit(20)).all()
    text = "\n".join(describe(m) for m in reversed(rows) if describe(m))
    return Turn(text, first=last_out is None and len(rows) < 20)


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    letters = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).upper()
    return " ".join(re.sub(r"[^\w]+", " ", letters).split())


def _asks_for_person(settings: AISettings, question: str) -> bool:
    padded = f" {_plain(question)} "
    return any(f" {word} " in padded for word in handoff_keywords(settings))


def _ask(job: Job, turn: Turn, now: datetime) -> str:
    settings, reply = job.settings, job.reply
    if settings.paused_until is not None and settings.paused_until > now:
        return _fallback(job, settings.pause_reason or "paused")
    key = api_key(settings)
    if not key:
        _note_error(job.workspace.id, "no_key", "")
        return _fallback(job, "no_key")
    # Only a first question is answered from (and into) the cache: later ones depend on what was
    # said before, which differs from one customer to the next.
    cache_key = _cache_key(settings, job.workspace, turn.text, now) if turn.first else None
    if cache_key is not None:
        cached = _cached(job.workspace.id, cache_key, now)
        if cached is not None:
            return _send(job, Answer(cached, False), cached=True)
    config = current_app.config
    db.session.commit()  # the budget's lock starts a fresh transaction (SQLite: a write one)
    grant = budget.take(job.workspace.id, settings.per_minute, settings.per_day, job.workspace.timezone)
    if grant.call_id is None:
        if grant.day_spent:
            return _fallback(job, "budget_day")
        if now + timedelta(seconds=grant.wait) < reply.deadline_at:
            return _later(reply, grant.wait, "budget_minute")
        return _fallback(job, "budget_minute")
    system, turns = build(
        settings,
        job.workspace,
        job.conversation.id,
        job.inbound.id,
        now,
        config["AI_CONTEXT_TOKENS"],
        day_only=cache_key is not None,
    )
    if not turns:
        budget.record_outcome(grant.call_id, "unused")
        db.session.commit()
        return _fallback(job, "empty")
    attempt = reply.attempts + 1
    db.session.execute(update(AIReply).where(AIReply.id == reply.id).values(attempts=attempt))
    db.session.commit()
    try:
        result = generate(
            key, config.get("GEMINI_BASE_URL"), settings.model, system, turns, config["AI_TIMEOUT_SECONDS"]
        )
    except GeminiError as exc:
        budget.record_outcome(grant.call_id, exc.kind)
        db.session.commit()
        return _failed(job, exc, attempt)
    budget.record_outcome(grant.call_id, "ok")
    db.session.commit()
    if result.handoff:
        return _hand_off(job, "ai")
    if cache_key is not None and settings.cache_hours > 0:
        _remember(job.workspace.id, cache_key, result.reply, now + timedelta(hours=settings.cache_hours))
    return _send(job, result, cached=False)


def _failed(job: Job, exc: GeminiError, attempt: int) -> str:
    reply = job.reply
    log.warning(
        "ai reply %s (conversation %s): Gemini failed, attempt %d: %s (%s)",
        reply.id,
        reply.conversation_id,
        attempt,
        exc.kind,
        exc.detail[:120],
    )
    if exc.kind == "daily_quota":
        settings = db.session.get(AISettings, job.workspace.id)
        if settings is not None:
            pause_until_tomorrow(settings, "daily_quota")
            db.session.commit()
            from crm.ai.settings import forget_gate

            forget_gate(job.workspace.id)
        return _fallback(job, "daily_quota", exc.detail)
    if not exc.retryable:
        _note_error(job.workspace.id, exc.kind, exc.detail)
        return _fallback(job, exc.kind, exc.detail)
    delay = backoff(attempt, exc.retry_after)
    out_of_time = utcnow() + timedelta(seconds=delay) >= reply.deadline_at
    if attempt >= current_app.config["AI_MAX_ATTEMPTS"] or out_of_time:
        _note_error(job.workspace.id, exc.kind, exc.detail)
        return _fallback(job, exc.kind, exc.detail)
    return _later(reply, delay, exc.kind)


def backoff(attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter, never sooner than Gemini asked."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
    jittered = ceiling / 2 + random.uniform(0, ceiling / 2)
    return max(retry_after or 0.0, jittered)


def _later(reply: AIReply, delay: float, why: str) -> str:
    now = utcnow()
    db.session.execute(
        update(AIReply)
        .where(AIReply.id == reply.id, AIReply.status == "answering")
        .values(
            status="pending",
            due_at=now + timedelta(seconds=delay),
            lease_until=None,
            error=why,
            updated_at=now,
        )
    )
    db.session.commit()
    enqueue(reply.id, delay)
    return f"retry:{why}"


def _settle(reply: AIReply, status: str, error: str | None, reply_message_id: int | None = None) -> str:
    now = utcnow()
    db.session.execute(
        update(AIReply)
        .where(AIReply.id == reply.id, AIReply.status == "answering")  # never a row settled meanwhile
        .values(
            status=status, error=error, lease_until=None, reply_message_id=reply_message_id, updated_at=now
        )
    )
    db.session.commit()
    return status if not error else f"{status}:{error}"


def _stage(job: Job, text: str, author: str, payload: dict[str, Any]) -> int | None:
    """The reply through the outbox, keyed to the inbound message (uncommitted). None when the
    customer opted out meanwhile."""
    from crm.whatsapp.outbox import OptedOut, stage_outbound

    try:
        message = stage_outbound(
            job.workspace.id,
            job.conversation,
            text=text,
            author=author,
            payload=payload,
            idempotency_key=f"ai:{job.inbound.id}",
        )
    except OptedOut:
        return None
    return message.id


def _finish_with(
    job: Job,
    text: str,
    author: str,
    payload: dict[str, Any],
    status: str,
    error: str | None,
    then: Callable[[], None] | None = None,
) -> str:
    """Send ``text`` and settle the job, in one transaction, if the answer is still owed: the
    conversation is locked and looked at again (Gemini may have taken seconds, and meanwhile a
    person may have answered or the customer written again). ``then`` runs in it too."""
    reply = job.reply
    try:
        # An UPDATE that changes nothing locks the row on PostgreSQL (and the file on SQLite):
        # a person's reply, which writes the conversation too, waits for this one or goes first.
        db.session.execute(
            update(Conversation)
            .where(Conversation.id == job.conversation.id)
            .values(ai_enabled=Conversation.ai_enabled)
        )
        db.session.refresh(job.conversation)
        if _newer_job(job):
            db.session.rollback()
            return _settle(reply, "superseded", "newer_message")
        why_not = "bot_off" if not job.conversation.ai_enabled else _team_answered(job)
        if why_not:
            db.session.rollback()
            return _settle(reply, "skipped", why_not)
        if then is not None:
            then()
        message_id = _stage(job, text[:MAX_TEXT], author, payload)
        if message_id is None:
            db.session.rollback()
            return _settle(reply, "skipped", "opted_out")
        db.session.execute(
            update(AIReply)
            .where(AIReply.id == reply.id, AIReply.status == "answering")
            .values(
                status=status, error=error, lease_until=None, reply_message_id=message_id, updated_at=utcnow()
            )
        )
        db.session.commit()
    except IntegrityError:  # the key was taken: this message was answered already
        db.session.rollback()
        return _settle(reply, status, "already_answered")
    return status if not error else f"{status}:{error}"


def _send(job: Job, answer: Answer, cached: bool) -> str:
    payload: dict[str, Any] = {"ai": {"cached": True} if cached else {}}
    return _finish_with(job, answer.reply, "ai", payload, "answered", "cache" if cached else None)


def _fallback(job: Job, why: str, detail: str = "") -> str:
    log.warning("ai reply %s: the customer gets the fallback (%s)", job.reply.id, why)
    payload = {"ai": {"error": why, "detail": detail[:300]}}
    text = fallback_text(job.settings, job.workspace)
    return _finish_with(job, text, "fallback", payload, "fallback", why)


def _hand_off(job: Job, by: str) -> str:
    """The customer gets the hand-off message, the bot steps back in this conversation, and the
    team is told (a note in the thread and a notification)."""
    conversation = job.conversation
    workspace_id = job.workspace.id
    with force_locale(job.workspace.locale):
        note = (
            _("The customer asked for a person: the bot stopped in this conversation.")
            if by == "keyword"
            else _("The bot passed this conversation to the team.")
        )

    def step_back() -> None:
        conversation.ai_enabled = False
        db.session.add(
            ConversationNote(workspace_id=workspace_id, conversation_id=conversation.id, text=note)
        )
        db.session.flush()
        publish_after_commit(
            workspace_id, {"type": "conversation.updated", "conversation_id": conversation.id}
        )
        publish_after_commit(
            workspace_id, {"type": "conversation.handoff", "conversation_id": conversation.id, "by": by}
        )

    text = handoff_text(job.settings, job.workspace)
    return _finish_with(job, text, "ai", {"ai": {"handoff": by}}, "handoff", by, then=step_back)


def _note_error(workspace_id: int, code: str, detail: str) -> None:
    """What admins see on the AI settings page: the last reason the AI could not answer."""
    db.session.execute(
        update(AISettings)
        .where(AISettings.workspace_id == workspace_id)
        .values(last_error=code[:32], last_error_detail=detail[:1000] or None, last_error_at=utcnow())
    )
    db.session.commit()


# --- the answer cache ---------------------------------------------------------------------------


def normalise_question(text: str) -> str:
    return _plain(text).lower()


def _cache_key(settings: AISettings, workspace: Workspace, question: str, now: datetime) -> str | None:
    """Same settings, same question, same day in the workspace (the answer was written knowing the
    date, not the time)."""
    plain = normalise_question(question)
    if settings.cache_hours <= 0 or len(plain) < MIN_CACHED_QUESTION or "[" in question:
        return None
    day = now.astimezone(ZoneInfo(workspace.timezone)).date().isoformat()
    raw = f"{settings.version}\x1f{settings.model}\x1f{day}\x1f{plain}"
    return hashlib.sha256(raw.encode()).hexdigest()


def _cached(workspace_id: int, key: str, now: datetime) -> str | None:
    entry = db.session.scalar(
        select(AICacheEntry).where(AICacheEntry.workspace_id == workspace_id, AICacheEntry.key == key)
    )
    if entry is None or entry.expires_at <= now:
        return None
    db.session.execute(
        update(AICacheEntry).where(AICacheEntry.id == entry.id).values(hits=AICacheEntry.hits + 1)
    )
    return entry.reply


def _remember(workspace_id: int, key: str, reply: str, expires_at: datetime) -> None:
    db.session.execute(
        update(AICacheEntry)
        .where(AICacheEntry.workspace_id == workspace_id, AICacheEntry.key == key)
        .values(reply=reply, expires_at=expires_at, created_at=utcnow())
    )
    db.session.execute(
        insert_ignoring_conflicts(AICacheEntry),
        {
            "workspace_id": workspace_id,
            "key": key,
            "reply": reply,
            "hits": 0,
            "created_at": utcnow(),
            "expires_at": expires_at,
        },
    )
    db.session.commit()


# --- housekeeping ------------------------------------------------------------------------------


def reconcile(stale_after: timedelta = timedelta(seconds=30)) -> int:
    """Queue again the answers owed whose job may be lost (the queue's data is not trusted to
    survive): pending ones due a while ago, and answering ones whose lease ran out. Each row is
    marked as it is queued again, so several workers reconciling at once queue it once."""
    now = utcnow()
    stale = or_(
        and_(AIReply.status == "pending", AIReply.due_at <= now - stale_after),
        and_(AIReply.status == "answering", AIReply.lease_until < now),
    )
    candidates = db.session.scalars(select(AIReply.id).where(stale).order_by(AIReply.id).limit(5000)).all()
    if not candidates:
        db.session.rollback()
        return 0
    mine = db.session.scalars(
        update(AIReply)
        .where(AIReply.id.in_(candidates), stale, AIReply.updated_at <= now - stale_after)
        .values(updated_at=now)
        .returning(AIReply.id)
    ).all()
    db.session.commit()
    for reply_id in mine:
        enqueue(reply_id, 0)
    return len(mine)


def purge(older_than: timedelta = timedelta(days=30)) -> dict[str, int]:
    """Settled reply rows past a month, expired cache entries, and the budget's old call log."""
    from sqlalchemy import delete

    now = utcnow()
    replies = db.session.execute(
        delete(AIReply).where(AIReply.status.not_in(OPEN), AIReply.updated_at < now - older_than)
    )
    cache = db.session.execute(delete(AICacheEntry).where(AICacheEntry.expires_at < now))
    db.session.commit()
    calls = budget.purge_old_calls()
    return {
        "replies": int(replies.rowcount or 0),  # type: ignore[attr-defined]
        "cache": int(cache.rowcount or 0),  # type: ignore[attr-defined]
        "calls": calls,
    }
