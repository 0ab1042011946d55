"""Consent: who may be messaged. Every change is recorded with who or what made it.

A lead who opted out gets nothing from anyone (the outbox refuses and re-checks at send time)
until they opt in again; the only message they still get is the confirmation of their opt-out.
Leads write keywords (SAIR, STOP, BAJA... / VOLTAR, START, ALTA) to opt out or in by themselves:
the whole message must be the keyword, so "não quero parar" never unsubscribes anyone.
"""

from __future__ import annotations

import functools
import logging
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import Table, bindparam, select, update

from crm.auth.models import Workspace
from crm.db import utcnow
from crm.errors import ValidationFailed
from crm.extensions import db
from crm.leads.models import ConsentEvent, ConsentSource, Lead
from crm.leads.phones import phone_variants
from crm.textcheck import check_clean_text

log = logging.getLogger(__name__)

# Portuguese, English and Spanish, as leads write them (accents and case don't matter).
DEFAULT_OPT_OUT_KEYWORDS = ("SAIR", "PARAR", "STOP", "CANCELAR", "BAJA", "DESCADASTRAR", "UNSUBSCRIBE")
DEFAULT_OPT_IN_KEYWORDS = ("VOLTAR", "START", "ALTA")
# The keyword a confirmation suggests for the way back, by the workspace's language.
_OPT_IN_BY_LANGUAGE = {"pt": "VOLTAR", "en": "START", "es": "ALTA"}
_OPT_OUT_BY_LANGUAGE = {"pt": "SAIR", "en": "STOP", "es": "BAJA"}
MAX_KEYWORD_LENGTH = 40
MAX_KEYWORDS = 30


@dataclass(frozen=True)
class ConsentChange:
    """How a consent change came about: the source, the member who made it, a detail (the keyword
    written, the imported file)."""

    source: ConsentSource
    user_id: int | None = None
    detail: str = ""


def record_consent(lead: Lead, opted_in: bool, change: ConsentChange) -> None:
    """Set the lead's consent and add it to their history (no commit: part of the caller's change)."""
    now = utcnow()
    lead.opt_in = opted_in
    if opted_in:
        lead.opted_in_at, lead.opted_out_at = now, None
    else:
        lead.opted_out_at = now
    db.session.add(
        ConsentEvent(
            workspace_id=lead.workspace_id,
            lead_id=lead.id,
            opted_in=opted_in,
            source=change.source.value,
            user_id=change.user_id,
            detail=change.detail[:200],
            created_at=now,
        )
    )


def set_consent(workspace_id: int, lead_ids: Iterable[int], opted_in: bool, change: ConsentChange) -> int:
    """Opt leads in or out (bulk or one); those already in that state are left alone. Commits;
    returns how many changed."""
    ids = list(lead_ids)
    if not ids:
        return 0
    leads = db.session.scalars(
        select(Lead)
        .where(Lead.workspace_id == workspace_id, Lead.id.in_(ids), Lead.kind == "person")
        .where(Lead.deleted_at.is_(None))
        .with_for_update()
    ).all()
    from crm.leads.services import announce_leads_changed

    changed = [lead.id for lead in leads if not (lead.opt_in if opted_in else lead.opted_out_at is not None)]
    for lead in leads:
        if lead.id in changed:
            record_consent(lead, opted_in, change)
    announce_leads_changed(workspace_id, changed)
    db.session.commit()
    return len(changed)


def phone_opted_out(workspace_id: int, phone: str | None, exclude_lead_id: int | None = None) -> bool:
    """Whether someone opted out on this line: the phone itself or, for a Brazilian mobile, its
    spelling with or without the ninth digit (WhatsApp reports some lines one way, people type
    them the other: the same person, who said stop)."""
    if not phone:
        return False
    params = {
        "workspace_id": workspace_id,
        "phones": [phone, *phone_variants(phone)],
        "exclude": -1 if exclude_lead_id is None else exclude_lead_id,
    }
    return db.session.connection().execute(_phone_opted_out_select(), params).first() is not None


@functools.cache
def _phone_opted_out_select() -> Any:  # built once: the send path asks this for every message
    leads = cast(Table, Lead.__table__)
    return (
        select(leads.c.id)
        .where(
            leads.c.workspace_id == bindparam("workspace_id"),
            leads.c.phone.in_(bindparam("phones", expanding=True)),
            leads.c.opted_out_at.isnot(None),
            leads.c.id != bindparam("exclude"),
        )
        .limit(1)
    )


def opted_out(lead: Lead) -> bool:
    """A lead who must get nothing: they opted out, or did so on the other spelling of their line."""
    return opted_out_by(lead.workspace_id, lead.id, lead.phone, lead.opted_out_at)


def opted_out_by(workspace_id: int, lead_id: int, phone: str | None, opted_out_at: datetime | None) -> bool:
    """``opted_out`` from the lead's columns (the send path reads them without loading the lead)."""
    if opted_out_at is not None:
        return True
    return bool(phone_variants(phone)) and phone_opted_out(workspace_id, phone, lead_id)


def consent_history(workspace_id: int, lead_id: int, limit: int = 100) -> list[ConsentEvent]:
    return list(
        db.session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.workspace_id == workspace_id, ConsentEvent.lead_id == lead_id)
            .order_by(ConsentEvent.id.desc())
            .limit(limit)
        )
    )


def normalise_keyword(text: str) -> str:
    """Upper case, accents off, surrounding spaces and punctuation off: "Sair." → "SAIR"."""
    plain = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in plain if not unicodedata.combining(ch))
    return " ".join(plain.strip(" \t\r\n.,;:!?¡¿\"'()*_~-").split()).upper()


def might_be_keyword(text: str) -> bool:
    """Cheap test on the inbound path: only short messages are worth a look at the settings."""
    return 0 < len(text.strip()) <= MAX_KEYWORD_LENGTH + 4


# The inbound path asks, for every short message, whether it is a keyword of its workspace: the
# keywords are kept per process for a short while, so "Oi" and "ok" cost no query and no task.
# The task looks at the settings again; a settings change reaches other processes within this.
KEYWORDS_TTL = 30.0
_keywords: dict[int, tuple[float, frozenset[str]]] = {}


def is_keyword(workspace_id: int, text: str) -> bool:
    """Whether an inbound text is one of the workspace's consent keywords (as of a few seconds)."""
    if not might_be_keyword(text):
        return False
    now = time.monotonic()
    cached = _keywords.get(workspace_id)
    if cached is None or now - cached[0] > KEYWORDS_TTL:
        workspace = db.session.get(Workspace, workspace_id)
        words = (
            frozenset(opt_out_keywords(workspace) + opt_in_keywords(workspace)) if workspace else frozenset()
        )
        cached = _keywords[workspace_id] = (now, words)
    return normalise_keyword(text) in cached[1]


def forget_keywords(workspace_id: int | None = None) -> None:
    """Drop the kept keywords (of one workspace: its settings changed here)."""
    if workspace_id is None:
        _keywords.clear()
    else:
        _keywords.pop(workspace_id, None)


def parse_keywords(raw: str) -> list[str]:
    """A settings field ("SAIR, STOP, Baja") → clean keywords; a 422 for one too long or too many."""
    keywords: list[str] = []
    for part in check_clean_text(raw, code="invalid_keywords").replace("\n", ",").split(","):
        keyword = normalise_keyword(part)
        if not keyword:
            continue
        if len(keyword) > MAX_KEYWORD_LENGTH:
            raise ValidationFailed(
                _("A keyword can have at most %(n)d characters.", n=MAX_KEYWORD_LENGTH),
                code="invalid_keywords",
            )
        if keyword not in keywords:
            keywords.append(keyword)
    if len(keywords) > MAX_KEYWORDS:
        raise ValidationFailed(_("At most %(n)d keywords.", n=MAX_KEYWORDS), code="invalid_keywords")
    return keywords


def opt_out_keywords(workspace: Workspace) -> list[str]:
    if workspace.opt_out_keywords is None:
        return list(DEFAULT_OPT_OUT_KEYWORDS)
    return parse_keywords(workspace.opt_out_keywords)


def opt_in_keywords(workspace: Workspace) -> list[str]:
    if workspace.opt_in_keywords is None:
        return list(DEFAULT_OPT_IN_KEYWORDS)
    return parse_keywords(workspace.opt_in_keywords)


def _suggested(keywords: list[str], by_language: dict[str, str], locale: str) -> str:
    preferred = by_language.get(locale.split("_")[0], "")
    return preferred if preferred in keywords else (keywords[0] if keywords else "")


def confirmation_text(workspace: Workspace, opted_in: bool) -> str:
    """What the lead is told after a keyword: the workspace's own text, or our default."""
    own = workspace.opt_in_reply if opted_in else workspace.opt_out_reply
    return own.strip() if own and own.strip() else default_confirmation(workspace, opted_in)


def default_confirmation(workspace: Workspace, opted_in: bool) -> str:
    """Our confirmation, in the workspace's language, naming the keyword for the way back."""
    with force_locale(workspace.locale):
        if opted_in:
            stop = _suggested(opt_out_keywords(workspace), _OPT_OUT_BY_LANGUAGE, workspace.locale)
            if stop:
                return _(
                    "Welcome back: you will receive our messages again. Reply %(keyword)s to stop.",
                    keyword=stop,
                )
            return _("Welcome back: you will receive our messages again.")
        back = _suggested(opt_in_keywords(workspace), _OPT_IN_BY_LANGUAGE, workspace.locale)
        if back:
            return _(
                "Done: you will not receive any more messages from us. If you change your mind, reply "
                "%(keyword)s.",
                keyword=back,
            )
        return _("Done: you will not receive any more messages from us.")


def apply_consent_keyword(workspace_id: int, message_id: int) -> str:
    """If an inbound message is an opt-out or opt-in keyword, change the lead's consent (recorded
    with the keyword) and confirm to them through the outbox. Returns what happened.

    Keyed to the message: a task retried or a webhook delivered twice records and confirms once
    (the second run finds the lead already in that state). A keyword that changes nothing (a
    second STOP) gets no reply: nobody who said stop gets more messages than the confirmation.
    """
    from crm.inbox.models import Conversation, Message
    from crm.realtime.broker import publish_after_commit
    from crm.whatsapp.outbox import CONSENT_NOTICE, queue_outbound

    message = db.session.get(Message, message_id)
    if message is None or message.workspace_id != workspace_id or message.direction != "in":
        return "not_found"
    workspace = db.session.get(Workspace, workspace_id)
    conversation = db.session.get(Conversation, message.conversation_id)
    assert workspace is not None and conversation is not None
    lead = db.session.get(Lead, conversation.lead_id)
    if lead is None or lead.is_group or message.type != "text":
        return "ignored"
    keyword = normalise_keyword(message.text or "")
    if keyword in opt_out_keywords(workspace):
        opted_in = False
    elif keyword in opt_in_keywords(workspace):
        opted_in = True
    else:
        return "no_keyword"
    db.session.execute(  # one keyword run at a time per lead: two quick STOPs record one change
        update(Lead).where(Lead.id == lead.id).values(updated_at=utcnow())
    )
    db.session.refresh(lead)
    already = lead.opt_in if opted_in else lead.opted_out_at is not None
    if already:  # a second STOP: nothing changes, and nobody who said stop gets another message
        db.session.commit()
        return "unchanged"
    record_consent(lead, opted_in, ConsentChange(ConsentSource.KEYWORD, detail=keyword))
    publish_after_commit(workspace_id, {"type": "conversation.updated", "conversation_id": conversation.id})
    # The change and its confirmation commit together (queue_outbound commits): a crash leaves
    # neither, and the task's retry does both.
    queue_outbound(
        workspace_id,
        conversation,
        text=confirmation_text(workspace, opted_in),
        author=CONSENT_NOTICE,
        payload={"consent": "opt_in" if opted_in else "opt_out"},
        idempotency_key=f"consent:{message_id}",
    )
    log.info("lead %s opted %s by keyword", lead.id, "in" if opted_in else "out")
    return "opted_in" if opted_in else "opted_out"
