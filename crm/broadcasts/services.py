"""Creating broadcasts, their audience, and pause / resume / cancel.

A broadcast's recipients are written when it is created, in one ``INSERT … SELECT``: every lead
who opted in, has not opted out, is not in the trash and carries all the chosen tags (minus the
exclusions), or the chosen WhatsApp groups. Each recipient gets the number that will carry it:
the number of its existing conversation when that is one of the broadcast's, else the numbers
in turn. Opt-outs and deletions are checked again when each recipient's turn comes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import and_, case, delete, exists, func, insert, literal, select, text, update

from crm.broadcasts.models import (
    Broadcast,
    BroadcastAccount,
    BroadcastRecipient,
    BroadcastStatus,
    RecipientState,
    SkipReason,
)
from crm.broadcasts.render import MAX_VARIANTS, check_variables
from crm.db import utcnow
from crm.errors import Conflict, ValidationFailed
from crm.extensions import db
from crm.inbox.keys import forget_messages
from crm.inbox.models import Conversation, Message
from crm.leads.models import Lead, LeadTag
from crm.leads.search import LeadFilter, filtered_leads
from crm.leads.services import tag_key
from crm.realtime.broker import publish_after_commit
from crm.tenancy import get_scoped, scoped
from crm.textcheck import check_clean_text
from crm.whatsapp.models import MessageTemplate, Outbox, OutboxState, WhatsAppAccount, WhatsAppGroup

log = logging.getLogger(__name__)

MAX_TEXT = 4096
MAX_NAME = 200
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


@dataclass
class Draft:
    """What a person (or the API) asks for; checked by ``create_broadcast``."""

    name: Any  # checked, like every field, by ``create_broadcast``
    variants: list[Any] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    exclude_tags: list[str] = field(default_factory=list)
    exclude_contacted_days: int | None = None
    group_ids: list[int] = field(default_factory=list)
    account_ids: list[int] | None = None
    scheduled_at: datetime | None = None
    send_from: str | None = None
    send_until: str | None = None
    template_name: str | None = None
    template_language: str | None = None
    template_values: dict[str, str] = field(default_factory=dict)
    media_file_id: int | None = None
    user_id: int | None = None


class InvalidState(Conflict):
    code = "invalid_state"

    def default_message(self) -> str:
        return _("This broadcast is finished: it can't be changed.")


# --- checking a draft -------------------------------------------------------------------------


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed(_("Give the broadcast a name."), code="invalid_name")
    clean = " ".join(check_clean_text(name, code="invalid_name").split())
    if len(clean) > MAX_NAME:
        raise ValidationFailed(
            _("A name can have at most %(n)d characters.", n=MAX_NAME), code="invalid_name"
        )
    return clean


def check_variants(variants: list[Any]) -> list[str]:
    texts = [v for v in variants if isinstance(v, str) and v.strip()]
    if len(texts) != len([v for v in variants if v not in (None, "")]):
        raise ValidationFailed(_("Each message text must be text."), code="invalid_text")
    if not texts:
        raise ValidationFailed(_("Write the message text."), code="invalid_text")
    if len(texts) > MAX_VARIANTS:
        raise ValidationFailed(
            _("A broadcast can have at most %(n)d variants.", n=MAX_VARIANTS), code="invalid_text"
        )
    for variant in texts:
        if len(variant) > MAX_TEXT:
            raise ValidationFailed(
                _("A message can have at most %(n)d characters.", n=MAX_TEXT), code="invalid_text"
            )
        check_variables(check_clean_text(variant, code="invalid_text"))
    return [t.strip() for t in texts]


def _check_hours(send_from: str | None, send_until: str | None) -> tuple[str | None, str | None]:
    if not send_from and not send_until:
        return None, None
    if not (send_from and send_until and HHMM.match(send_from) and HHMM.match(send_until)):
        raise ValidationFailed(
            _("Sending hours need a start and an end, as HH:MM (for example 08:00 and 20:00)."),
            code="invalid_hours",
        )
    if send_from == send_until:
        raise ValidationFailed(_("Sending hours can't start and end at the same time."), code="invalid_hours")
    return send_from, send_until


def _accounts(workspace_id: int, account_ids: list[int] | None) -> list[WhatsAppAccount]:
    if account_ids is None:
        accounts = list(
            db.session.scalars(
                scoped(select(WhatsAppAccount), WhatsAppAccount, workspace_id)
                .where(WhatsAppAccount.status == "active")
                .order_by(WhatsAppAccount.priority, WhatsAppAccount.id)
            )
        )
        if not accounts:
            raise Conflict(_("Connect a WhatsApp number before sending a broadcast."), code="no_account")
        return accounts
    if not account_ids or any(not isinstance(i, int) or isinstance(i, bool) for i in account_ids):
        raise ValidationFailed(_("account_ids must be a list of number ids."), code="invalid_account_ids")
    found = {
        a.id: a
        for a in db.session.scalars(
            scoped(select(WhatsAppAccount), WhatsAppAccount, workspace_id).where(
                WhatsAppAccount.id.in_(account_ids)
            )
        )
    }
    missing = [i for i in account_ids if i not in found]
    if missing:
        raise ValidationFailed(
            _("No number with id %(id)s in this workspace.", id=missing[0]), code="invalid_account_ids"
        )
    if any(a.status != "active" for a in found.values()):
        raise ValidationFailed(_("A chosen number is switched off."), code="invalid_account_ids")
    return [found[i] for i in dict.fromkeys(account_ids)]


def _check_template(draft: Draft, accounts: list[WhatsAppAccount]) -> None:
    from crm.whatsapp import templates

    if any(a.provider != "cloud" for a in accounts):
        raise ValidationFailed(
            _("Templates are sent by Cloud API numbers only: choose only those."), code="invalid_template"
        )
    for account in accounts:
        template = db.session.scalar(
            select(MessageTemplate).where(
                MessageTemplate.account_id == account.id,
                MessageTemplate.name == draft.template_name,
                MessageTemplate.language == (draft.template_language or ""),
            )
        )
        if template is None or not templates.sendable_from_inbox(template):
            raise ValidationFailed(
                _("The template %(name)s is not approved on %(number)s.", name=draft.template_name,
                  number=account.name),
                code="invalid_template",
            )  # fmt: skip
        for name in templates.body_params(template):
            if not str(draft.template_values.get(name, "")).strip():
                raise ValidationFailed(
                    _("Fill in every variable of the template."), code="invalid_template_params"
                )
        for value in draft.template_values.values():
            check_variables(check_clean_text(str(value), code="invalid_template_params"))


def _check_tags(tags: list[Any], code: str) -> list[str]:
    if not isinstance(tags, list) or any(not isinstance(t, str) for t in tags):
        raise ValidationFailed(_("Tags must be a list of texts."), code=code)
    keys = [tag_key(check_clean_text(t, code=code)) for t in tags]
    return list(dict.fromkeys(k for k in keys if k))


# --- the audience -----------------------------------------------------------------------------


def audience_query(workspace_id: int, draft: Draft) -> Any:
    """The leads a broadcast to ``draft``'s tags goes to (a SELECT of Lead)."""
    stmt = filtered_leads(
        workspace_id, LeadFilter(opt_in=True, not_contacted_days=draft.exclude_contacted_days)
    ).where(Lead.opted_out_at.is_(None), (Lead.phone.isnot(None)) | (Lead.bsuid.isnot(None)))
    for key in _check_tags(draft.tags, "invalid_tags"):
        stmt = stmt.where(exists().where(and_(LeadTag.lead_id == Lead.id, LeadTag.key == key)))
    excluded = _check_tags(draft.exclude_tags, "invalid_tags")
    if excluded:
        stmt = stmt.where(~exists().where(and_(LeadTag.lead_id == Lead.id, LeadTag.key.in_(excluded))))
    return stmt


def audience_count(workspace_id: int, draft: Draft) -> int:
    if draft.group_ids:
        return len(_groups(workspace_id, draft.group_ids))
    stmt = audience_query(workspace_id, draft).with_only_columns(func.count(Lead.id)).order_by(None)
    return db.session.scalar(stmt) or 0


def _groups(workspace_id: int, group_ids: list[int]) -> list[WhatsAppGroup]:
    if any(not isinstance(i, int) or isinstance(i, bool) for i in group_ids):
        raise ValidationFailed(_("Choose groups by their ids."), code="invalid_groups")
    groups = list(
        db.session.scalars(
            scoped(select(WhatsAppGroup), WhatsAppGroup, workspace_id).where(WhatsAppGroup.id.in_(group_ids))
        )
    )
    if len(groups) != len(set(group_ids)):
        raise ValidationFailed(_("A chosen group is not one of this workspace's."), code="invalid_groups")
    return groups


def _materialise_leads(broadcast: Broadcast, draft: Draft, account_ids: list[int]) -> int:
    """One INSERT … SELECT: every lead of the audience, with the number that will carry them."""
    carrier: Any = literal(account_ids[0])  # one number: everyone goes through it
    if len(account_ids) > 1:
        own_conversation = (
            select(Conversation.account_id)
            .where(Conversation.lead_id == Lead.id, Conversation.account_id.in_(account_ids))
            .order_by(Conversation.last_message_at.desc(), Conversation.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        spread = case(
            *[(Lead.id % len(account_ids) == i, account_id) for i, account_id in enumerate(account_ids)],
            else_=account_ids[0],
        )
        carrier = func.coalesce(own_conversation, spread)
    now = utcnow()
    chosen = (
        audience_query(broadcast.workspace_id, draft)
        .with_only_columns(
            literal(broadcast.workspace_id),
            literal(broadcast.id),
            Lead.id,
            carrier,
            literal(RecipientState.PENDING.value),
            literal(now),
        )
        .order_by(Lead.id)
    )
    if db.session.get_bind().dialect.name == "postgresql":
        # One statement, run once: compiling it just in time costs more than it saves.
        db.session.execute(text("SET LOCAL jit = off"))
    db.session.execute(
        insert(BroadcastRecipient).from_select(
            ["workspace_id", "broadcast_id", "lead_id", "account_id", "state", "updated_at"], chosen
        )
    )
    # Counted rather than read from the driver (psycopg gives no row count for this statement).
    count = select(func.count()).where(BroadcastRecipient.broadcast_id == broadcast.id)
    return db.session.scalar(count) or 0


def _group_lead(group: WhatsAppGroup) -> int:
    """The lead that stands for a group (its conversation is the group chat), created if new."""
    from crm.leads.services import insert_lead_if_new

    insert_lead_if_new(group.workspace_id, None, group.jid, group.name[:200], kind="group")
    lead_id = db.session.scalar(
        select(Lead.id).where(Lead.workspace_id == group.workspace_id, Lead.bsuid == group.jid)
    )
    assert lead_id is not None
    return lead_id


def _materialise_groups(broadcast: Broadcast, groups: list[WhatsAppGroup]) -> int:
    now = utcnow()
    rows = [
        {
            "workspace_id": broadcast.workspace_id,
            "broadcast_id": broadcast.id,
            "lead_id": _group_lead(group),
            "account_id": group.account_id,
            "state": RecipientState.PENDING.value,
            "updated_at": now,
        }
        for group in groups
    ]
    unique = list({row["lead_id"]: row for row in rows}.values())
    if unique:
        db.session.execute(insert(BroadcastRecipient), unique)
    return len(unique)


# --- creating ---------------------------------------------------------------------------------


def create_broadcast(workspace_id: int, draft: Draft) -> Broadcast:
    """Check the draft, write the broadcast and its recipients, commit, and start it (or schedule
    it). Bad input changes nothing."""
    name = _check_name(draft.name)
    send_from, send_until = _check_hours(draft.send_from, draft.send_until)
    if draft.template_name:
        variants: list[str] = []
    else:
        variants = check_variants(draft.variants)
    if draft.exclude_contacted_days is not None and not (
        isinstance(draft.exclude_contacted_days, int) and 1 <= draft.exclude_contacted_days <= 3650
    ):
        raise ValidationFailed(
            _("Exclude leads contacted in the last 1 to 3650 days."), code="invalid_exclusion"
        )
    groups = _groups(workspace_id, draft.group_ids) if draft.group_ids else []
    if groups:
        accounts = _accounts(workspace_id, sorted({g.account_id for g in groups}))
    else:
        accounts = _accounts(workspace_id, draft.account_ids)
    if draft.template_name:
        _check_template(draft, accounts)
    if draft.media_file_id is not None:
        from crm.media.models import MediaFile

        get_scoped(MediaFile, workspace_id, draft.media_file_id)
    now = utcnow()
    later = draft.scheduled_at is not None and draft.scheduled_at > now
    broadcast = Broadcast(
        workspace_id=workspace_id,
        name=name,
        status=BroadcastStatus.SCHEDULED.value if later else BroadcastStatus.RUNNING.value,
        variants=variants,
        template_name=draft.template_name,
        template_language=draft.template_language,
        template_values=dict(draft.template_values) if draft.template_name else None,
        media_file_id=draft.media_file_id,
        audience=(
            {"groups": [g.id for g in groups]}
            if groups
            else {
                "tags": _check_tags(draft.tags, "invalid_tags"),
                "exclude_tags": _check_tags(draft.exclude_tags, "invalid_tags"),
                "exclude_contacted_days": draft.exclude_contacted_days,
            }
        ),
        scheduled_at=draft.scheduled_at,
        send_from=send_from,
        send_until=send_until,
        created_by_user_id=draft.user_id,
        created_at=now,
        started_at=None if later else now,
        next_tick_at=draft.scheduled_at if later else now,
    )
    db.session.add(broadcast)
    db.session.flush()
    db.session.add_all(
        BroadcastAccount(broadcast_id=broadcast.id, account_id=a.id, workspace_id=workspace_id)
        for a in accounts
    )
    if groups:
        broadcast.recipients_count = _materialise_groups(broadcast, groups)
    else:
        broadcast.recipients_count = _materialise_leads(broadcast, draft, [a.id for a in accounts])
    if broadcast.recipients_count == 0 and not later:
        broadcast.status = BroadcastStatus.DONE.value
        broadcast.finished_at = now
    _announce(broadcast)
    _wake_after_commit(broadcast)
    db.session.commit()
    log.info("broadcast %s created: %d recipients", broadcast.id, broadcast.recipients_count)
    return broadcast


def _wake_after_commit(broadcast: Broadcast) -> None:
    """Start the dispatcher for this broadcast once the transaction commits (now, or at its time)."""
    from crm.broadcasts.tasks import dispatch_task
    from crm.db import after_commit
    from crm.worker import huey

    if broadcast.status_enum.finished or broadcast.status == BroadcastStatus.PAUSED.value:
        return
    broadcast_id, due = broadcast.id, broadcast.next_tick_at
    if broadcast.status == BroadcastStatus.SCHEDULED.value and due is not None and not huey.immediate:
        after_commit(lambda: dispatch_task.schedule(args=(broadcast_id,), eta=due))
    elif broadcast.status == BroadcastStatus.RUNNING.value:
        after_commit(lambda: dispatch_task(broadcast_id))


def _announce(broadcast: Broadcast) -> None:
    publish_after_commit(
        broadcast.workspace_id,
        {"type": "broadcast.changed", "broadcast_id": broadcast.id, "status": broadcast.status},
    )


# --- reading ----------------------------------------------------------------------------------


def get_broadcast(workspace_id: int, broadcast_id: int) -> Broadcast:
    return get_scoped(Broadcast, workspace_id, broadcast_id)


def list_broadcasts(workspace_id: int, limit: int = 50) -> list[Broadcast]:
    return list(
        db.session.scalars(
            scoped(select(Broadcast), Broadcast, workspace_id).order_by(Broadcast.id.desc()).limit(limit)
        )
    )


COUNTED = ("queued", "sent", "delivered", "read", "failed", "skipped")


def recipient_outcome() -> Any:
    """A recipient's current state as one word (the counters and the per-recipient table)."""
    return case(
        (BroadcastRecipient.state == RecipientState.PENDING.value, literal("queued")),
        (BroadcastRecipient.state == RecipientState.SKIPPED.value, literal("skipped")),
        (Message.id.is_(None), literal("queued")),
        (Message.error_code == "opted_out", literal("skipped")),
        (Message.status.in_(("queued", "sending")), literal("queued")),
        (Message.status == "played", literal("read")),
        else_=Message.status,
    )


def counts(broadcast_id: int) -> dict[str, int]:
    """How many recipients are in each state; each counted once, under its current state."""
    outcome = recipient_outcome()
    rows = db.session.execute(
        select(outcome, func.count())
        .select_from(BroadcastRecipient)
        .outerjoin(Message, Message.id == BroadcastRecipient.message_id)
        .where(BroadcastRecipient.broadcast_id == broadcast_id)
        .group_by(outcome)
    ).all()
    found = dict.fromkeys(COUNTED, 0)
    for state, n in rows:
        found[state if state in found else "failed"] += n
    return found


def as_dict(broadcast: Broadcast) -> dict[str, Any]:
    return {
        "id": broadcast.id,
        "name": broadcast.name,
        "status": broadcast.status,
        "recipients": broadcast.recipients_count,
        **counts(broadcast.id),
        "pause_reason": broadcast.pause_reason,
        "scheduled_at": broadcast.scheduled_at.isoformat() if broadcast.scheduled_at else None,
        "created_at": broadcast.created_at.isoformat(),
        "finished_at": broadcast.finished_at.isoformat() if broadcast.finished_at else None,
    }


# --- pause, resume, cancel --------------------------------------------------------------------


def _withdraw(broadcast_id: int, *, skip: bool) -> int:
    """Take back this broadcast's messages still waiting in the outbox (not those being sent right
    now: a conditional delete leaves a row a sender has claimed). Their recipients go back to
    pending, or are skipped (cancel). The messages never went out, so they are deleted."""
    queued_messages = select(BroadcastRecipient.message_id).where(
        BroadcastRecipient.broadcast_id == broadcast_id,
        BroadcastRecipient.state == RecipientState.QUEUED.value,
        BroadcastRecipient.message_id.isnot(None),
    )
    taken = list(
        db.session.execute(
            delete(Outbox)
            .where(Outbox.state == OutboxState.QUEUED.value, Outbox.message_id.in_(queued_messages))
            .returning(Outbox.message_id)
        ).scalars()
    )
    if taken:
        _back_to_waiting(taken, skip=skip)
    return len(taken)


def _back_to_waiting(message_ids: list[int], *, skip: bool) -> None:
    db.session.execute(
        update(BroadcastRecipient)
        .where(BroadcastRecipient.message_id.in_(message_ids))
        .values(
            state=RecipientState.SKIPPED.value if skip else RecipientState.PENDING.value,
            skip_reason=SkipReason.CANCELLED.value if skip else None,
            message_id=None,
            updated_at=utcnow(),
        )
    )
    forget_messages(message_ids)  # their outbox rows
    db.session.execute(delete(Message).where(Message.id.in_(message_ids)))


def pause_broadcast(workspace_id: int, broadcast_id: int, reason: str | None = None) -> Broadcast:
    broadcast = _lock(workspace_id, broadcast_id)
    if broadcast.status_enum.finished:
        raise InvalidState()
    if broadcast.status != BroadcastStatus.PAUSED.value:
        _pause(broadcast, reason)
    db.session.commit()
    return broadcast


def _pause(broadcast: Broadcast, reason: str | None) -> None:
    broadcast.status = BroadcastStatus.PAUSED.value
    broadcast.pause_reason = reason
    withdrawn = _withdraw(broadcast.id, skip=False)
    log.info("broadcast %s paused (%s), %d queued messages withdrawn", broadcast.id, reason, withdrawn)
    _announce(broadcast)


def resume_broadcast(workspace_id: int, broadcast_id: int) -> Broadcast:
    broadcast = _lock(workspace_id, broadcast_id)
    if broadcast.status_enum.finished:
        raise InvalidState()
    if broadcast.status == BroadcastStatus.PAUSED.value:
        now = utcnow()
        later = broadcast.scheduled_at is not None and broadcast.scheduled_at > now
        broadcast.status = BroadcastStatus.SCHEDULED.value if later else BroadcastStatus.RUNNING.value
        broadcast.pause_reason = None
        broadcast.next_tick_at = broadcast.scheduled_at if later else now
        if broadcast.started_at is None and not later:
            broadcast.started_at = now
        _move_off_unusable_numbers(broadcast)
        _announce(broadcast)
        _wake_after_commit(broadcast)
    db.session.commit()
    return broadcast


def _move_off_unusable_numbers(broadcast: Broadcast) -> None:
    """Pending recipients of a number that can't send move to the broadcast's numbers that can
    (group recipients stay: only that number is in the group)."""
    accounts = broadcast_accounts(broadcast.id)
    usable = [a.id for a in accounts if a.is_usable]
    stuck = [a.id for a in accounts if not a.is_usable]
    if not usable or not stuck or broadcast.audience.get("groups"):
        return
    spread: Any = case(
        *[(BroadcastRecipient.lead_id % len(usable) == i, a) for i, a in enumerate(usable)], else_=usable[0]
    )
    db.session.execute(
        update(BroadcastRecipient)
        .where(
            BroadcastRecipient.broadcast_id == broadcast.id,
            BroadcastRecipient.state == RecipientState.PENDING.value,
            BroadcastRecipient.account_id.in_(stuck),
        )
        .values(account_id=spread)
    )


def cancel_broadcast(workspace_id: int, broadcast_id: int) -> Broadcast:
    broadcast = _lock(workspace_id, broadcast_id)
    if broadcast.status_enum.finished:
        raise InvalidState()
    now = utcnow()
    broadcast.status = BroadcastStatus.CANCELLED.value
    broadcast.finished_at = now
    _withdraw(broadcast.id, skip=True)
    db.session.execute(
        update(BroadcastRecipient)
        .where(
            BroadcastRecipient.broadcast_id == broadcast.id,
            BroadcastRecipient.state == RecipientState.PENDING.value,
        )
        .values(state=RecipientState.SKIPPED.value, skip_reason=SkipReason.CANCELLED.value, updated_at=now)
    )
    _announce(broadcast)
    db.session.commit()
    return broadcast


def _lock(workspace_id: int, broadcast_id: int) -> Broadcast:
    """The broadcast, its row locked until commit (PostgreSQL): a pause and a dispatcher tick
    don't interleave."""
    get_broadcast(workspace_id, broadcast_id)
    broadcast = db.session.scalar(
        select(Broadcast)
        .where(Broadcast.id == broadcast_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert broadcast is not None
    return broadcast


def broadcast_accounts(broadcast_id: int) -> list[WhatsAppAccount]:
    return list(
        db.session.scalars(
            select(WhatsAppAccount)
            .join(BroadcastAccount, BroadcastAccount.account_id == WhatsAppAccount.id)
            .where(BroadcastAccount.broadcast_id == broadcast_id)
            .order_by(WhatsAppAccount.id)
        )
    )


def pause_for_account(account: WhatsAppAccount, reason: str) -> list[int]:
    """A number was blocked, logged out or hit a spam limit: pause every broadcast still sending
    through it, saying why (no commit: part of the caller's transaction)."""
    running = list(
        db.session.scalars(
            select(Broadcast)
            .join(BroadcastAccount, BroadcastAccount.broadcast_id == Broadcast.id)
            .where(
                BroadcastAccount.account_id == account.id,
                Broadcast.status.in_([BroadcastStatus.RUNNING.value, BroadcastStatus.SCHEDULED.value]),
                # Still someone to send to through it (a resume may have moved them elsewhere).
                exists().where(
                    BroadcastRecipient.broadcast_id == Broadcast.id,
                    BroadcastRecipient.account_id == account.id,
                    BroadcastRecipient.state == RecipientState.PENDING.value,
                )
                | exists().where(
                    BroadcastRecipient.broadcast_id == Broadcast.id,
                    BroadcastRecipient.account_id == account.id,
                    Outbox.message_id == BroadcastRecipient.message_id,
                    Outbox.state.in_([OutboxState.QUEUED.value, OutboxState.SENDING.value]),
                ),
            )
            .with_for_update(of=Broadcast)
        )
    )
    for broadcast in running:
        _pause(broadcast, reason)
    return [b.id for b in running]


def due_for_wake(now: datetime, overdue: timedelta) -> list[int]:
    """Scheduled broadcasts whose time has come, and running ones whose dispatcher looks gone
    (no tick for ``overdue``: its job was lost)."""
    return list(
        db.session.scalars(
            select(Broadcast.id).where(
                (Broadcast.status == BroadcastStatus.SCHEDULED.value) & (Broadcast.next_tick_at <= now)
                | (Broadcast.status == BroadcastStatus.RUNNING.value)
                & (Broadcast.next_tick_at <= now - overdue)
            )
        )
    )


# --- one lead ---------------------------------------------------------------------------------


class NotOptedIn(Conflict):
    code = "not_opted_in"

    def default_message(self) -> str:
        return _("Only a lead who opted in can be in a broadcast.")


def add_lead(workspace_id: int, broadcast_id: int, lead_id: int) -> bool:
    """Add one lead to a broadcast that has not finished (the lead page's "add to broadcast").
    False when they were already in it; 409 for a finished broadcast or a lead without consent."""
    from crm.leads.consent import opted_out

    broadcast = _lock(workspace_id, broadcast_id)
    lead = get_scoped(Lead, workspace_id, lead_id)
    if broadcast.status_enum.finished:
        raise InvalidState()
    if broadcast.audience.get("groups"):
        raise ValidationFailed(
            _("This broadcast goes to WhatsApp groups, not to leads."), code="group_broadcast"
        )
    if lead.deleted_at is not None or lead.is_group:
        raise ValidationFailed(_("This lead can't be added."), code="invalid_lead")
    if opted_out(lead):
        from crm.whatsapp.outbox import OptedOut

        raise OptedOut()
    if not lead.opt_in:
        raise NotOptedIn()
    if not (lead.phone or lead.bsuid):
        raise ValidationFailed(_("This lead has no WhatsApp number."), code="invalid_lead")
    exists_already = db.session.scalar(
        select(BroadcastRecipient.id).where(
            BroadcastRecipient.broadcast_id == broadcast.id, BroadcastRecipient.lead_id == lead.id
        )
    )
    if exists_already is not None:
        db.session.commit()
        return False
    accounts = broadcast_accounts(broadcast.id)
    mine = db.session.scalar(
        select(Conversation.account_id)
        .where(Conversation.lead_id == lead.id, Conversation.account_id.in_([a.id for a in accounts]))
        .order_by(Conversation.last_message_at.desc())
        .limit(1)
    )
    usable = [a.id for a in accounts if a.is_usable] or [a.id for a in accounts]
    db.session.add(
        BroadcastRecipient(
            workspace_id=workspace_id,
            broadcast_id=broadcast.id,
            lead_id=lead.id,
            account_id=mine or usable[lead.id % len(usable)],
            state=RecipientState.PENDING.value,
            updated_at=utcnow(),
        )
    )
    broadcast.recipients_count += 1
    _announce(broadcast)
    db.session.commit()
    return True


def open_broadcasts(workspace_id: int) -> list[Broadcast]:
    """Broadcasts to leads that have not finished: where a lead can still be added."""
    return [
        b
        for b in db.session.scalars(
            scoped(select(Broadcast), Broadcast, workspace_id)
            .where(
                Broadcast.status.in_(
                    [
                        BroadcastStatus.SCHEDULED.value,
                        BroadcastStatus.RUNNING.value,
                        BroadcastStatus.PAUSED.value,
                    ]
                )
            )
            .order_by(Broadcast.id.desc())
            .limit(50)
        )
        if not b.audience.get("groups")
    ]


def lead_broadcasts(workspace_id: int, lead_id: int, limit: int = 20) -> list[tuple[Broadcast, str]]:
    """The broadcasts a lead is in, newest first, with what happened to them in each."""
    outcome = recipient_outcome()
    rows = db.session.execute(
        select(Broadcast, outcome)
        .join(BroadcastRecipient, BroadcastRecipient.broadcast_id == Broadcast.id)
        .outerjoin(Message, Message.id == BroadcastRecipient.message_id)
        .where(BroadcastRecipient.workspace_id == workspace_id, BroadcastRecipient.lead_id == lead_id)
        .order_by(Broadcast.id.desc())
        .limit(limit)
    ).all()
    return [(broadcast, str(state)) for broadcast, state in rows]
