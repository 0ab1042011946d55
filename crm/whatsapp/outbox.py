"""Outbound messages, exactly once: the outbox.

``queue_outbound`` writes the message and its outbox row in the caller's transaction and enqueues
``deliver`` after the commit. ``deliver_outbound`` claims the row (queued → sending, with a
lease), calls the provider outside any transaction, then records the provider's id. If the
process dies between the provider accepting and our commit, the lease runs out and the row is
sent again: the one duplicate we can't rule out, and it is logged.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import Table, bindparam, case, or_, select, update
from sqlalchemy.exc import IntegrityError

from crm.db import utcnow
from crm.errors import Conflict
from crm.extensions import db
from crm.inbox.keys import record_key
from crm.inbox.models import Conversation, Message
from crm.leads.consent import opted_out, opted_out_by
from crm.leads.models import Lead
from crm.ops.metrics import record_send, record_send_error
from crm.realtime.broker import publish_after_commit
from crm.whatsapp import health, pacing
from crm.whatsapp.models import Outbox, OutboxState, WhatsAppAccount
from crm.whatsapp.providers.base import (
    ErrorAction,
    OutboundMedia,
    OutboundRequest,
    ProviderError,
    SendResult,
)
from crm.whatsapp.providers.registry import get_provider
from crm.whatsapp.routing import carrier_for
from crm.whatsapp.send_context import SendContext, account_view, read_context
from crm.whatsapp.statuses import apply_parked, sweep_parked

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
STALE_QUEUED = timedelta(minutes=1)


# The author of the confirmation a lead gets after writing an opt-out or opt-in keyword. The
# confirmation of an opt-out (payload ``{"consent": "opt_out"}``) is the one message that still goes
# to someone who just said stop; nothing else written as a notice is exempt.
CONSENT_NOTICE = "consent"


def _opt_out_notice(author: str, payload: dict[str, Any] | None) -> bool:
    return author == CONSENT_NOTICE and (payload or {}).get("consent") == "opt_out"


class OptedOut(Conflict):
    code = "opted_out"

    def default_message(self) -> str:
        return _("This lead opted out: they get no messages until they opt in again.")


@dataclass(frozen=True)
class Queued:
    message: Message
    created: bool  # False when the idempotency key had already been used


def queue_outbound(
    workspace_id: int,
    conversation: Conversation,
    *,
    text: str,
    author: str,
    author_user_id: int | None = None,
    type: str = "text",
    payload: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    media_file_id: int | None = None,
) -> Queued:
    """Queue a message in ``conversation`` and commit; the same idempotency key gives the same message.

    ``fingerprint`` identifies the request (recipient, text, ...): a key reused for a different
    request is refused rather than silently answered with another message. A message with a file
    that is not ready yet waits for it: preparing the file releases the delivery.
    """
    if idempotency_key:
        existing = find_by_idempotency_key(workspace_id, idempotency_key, fingerprint)
        if existing is not None:
            return Queued(existing, False)
    try:
        message = stage_outbound(
            workspace_id,
            conversation,
            text=text,
            author=author,
            author_user_id=author_user_id,
            type=type,
            payload=payload,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            media_file_id=media_file_id,
        )
    except IntegrityError:
        return _lost_race(workspace_id, idempotency_key, fingerprint)
    try:
        db.session.commit()
    except IntegrityError:
        return _lost_race(workspace_id, idempotency_key, fingerprint)
    return Queued(message, True)


def stage_outbound(
    workspace_id: int,
    conversation: Conversation,
    *,
    text: str,
    author: str,
    author_user_id: int | None = None,
    type: str = "text",
    payload: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    media_file_id: int | None = None,
) -> Message:
    """Write the message and its outbox row in the caller's transaction, without committing:
    the delivery is enqueued when the caller commits. Raises ``OptedOut`` for a lead who said stop
    and ``IntegrityError`` when the idempotency key is already taken."""
    lead = db.session.get(Lead, conversation.lead_id)
    if lead is not None and not _opt_out_notice(author, payload) and opted_out(lead):
        raise OptedOut()
    now = utcnow()
    message = Message(
        workspace_id=workspace_id,
        conversation_id=conversation.id,
        account_id=conversation.account_id,
        direction="out",
        type=type,
        text=text,
        status="queued",
        author=author,
        author_user_id=author_user_id,
        provider=_provider_of(conversation.account_id),
        payload=payload,
        media_file_id=media_file_id,
        created_at=now,
    )
    db.session.add(message)
    db.session.flush()
    outbox = Outbox(
        workspace_id=workspace_id,
        message_id=message.id,
        idempotency_key=idempotency_key,
        request_hash=fingerprint,
        state=OutboxState.QUEUED.value,
        next_attempt_at=now,
    )
    db.session.add(outbox)
    conversation.last_message_at = now
    conversation.status = "open"
    if author == "agent":
        conversation.ai_enabled = False  # a person answered: the bot stays out until re-enabled
    message_id = message.id
    db.session.flush()  # a reused idempotency key raises IntegrityError here
    if media_file_id is None or _media_ready(media_file_id):
        enqueue_delivery_after_commit(outbox.id)
    else:
        outbox.next_attempt_at = now + MEDIA_WAIT  # parked until its file is ready
        _enqueue_prepare_after_commit(media_file_id)
    publish_after_commit(
        workspace_id,
        {"type": "message.created", "message_id": message_id, "conversation_id": conversation.id},
    )
    return message


def _lost_race(workspace_id: int, idempotency_key: str | None, fingerprint: str | None) -> Queued:
    """The same idempotency key raced in from another request, and that one won."""
    db.session.rollback()
    existing = (
        find_by_idempotency_key(workspace_id, idempotency_key, fingerprint) if idempotency_key else None
    )
    if existing is None:
        raise Conflict(_("This message could not be queued; try again."), code="conflict")
    return Queued(existing, False)


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"

    def default_message(self) -> str:
        return _("This idempotency_key was already used for a different message.")


def find_by_idempotency_key(workspace_id: int, key: str, fingerprint: str | None) -> Message | None:
    """The message an idempotency key already created, if any; a different request → 409."""
    row = db.session.execute(
        select(Message, Outbox.request_hash)
        .join(Outbox, Outbox.message_id == Message.id)
        .where(Outbox.workspace_id == workspace_id, Outbox.idempotency_key == key)
    ).first()
    if row is None:
        return None
    message, stored = row
    if fingerprint is not None and stored is not None and stored != fingerprint:
        raise IdempotencyKeyReused()
    return message


def fingerprint_of(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def _media_ready(media_file_id: int) -> bool:
    from crm.media.models import MediaFile

    media = db.session.get(MediaFile, media_file_id)
    return media is not None and media.is_ready


def _enqueue_prepare_after_commit(media_file_id: int) -> None:
    from crm.media.tasks import prepare_media_task
    from crm.worker import enqueue_after_commit

    enqueue_after_commit(prepare_media_task, media_file_id)


def _provider_of(account_id: int) -> str:
    account = db.session.get(WhatsAppAccount, account_id)
    return account.provider if account else ""


# Where the queue has priorities (Redis and SQLite storage), a message someone is waiting for (an
# agent's reply, an API or AI send) goes ahead of broadcast sends already queued: a broadcast keeps
# ~2 s of its sends queued per number, and a sender may wait in place for its number's next slot.
# A broadcast's dispatcher tick is 10, its sends 0.
CONVERSATION_PRIORITY = 5


def delivery_priority(author: str | None) -> int:
    """A send's place in the queue, whenever it is queued again: a broadcast's behind the rest."""
    return 0 if author == "broadcast" else CONVERSATION_PRIORITY


def enqueue_delivery_after_commit(outbox_id: int, priority: int = CONVERSATION_PRIORITY) -> None:
    from crm.whatsapp.tasks import deliver_task
    from crm.worker import enqueue_after_commit

    enqueue_after_commit(deliver_task, outbox_id, priority=priority)


def _schedule(send: SendContext, delay: float) -> None:
    """Try the row again in ``delay`` seconds, at its place in the queue: a broadcast's send
    behind the messages someone is waiting for, however often it comes back."""
    from crm.whatsapp.tasks import deliver_task
    from crm.worker import huey

    if huey.immediate:
        return  # tests drive retries by hand; the reconciler also picks due rows up
    priority = delivery_priority(send.author)
    deliver_task.schedule(args=(send.outbox_id,), delay=max(delay, 0.05), priority=priority)


def _backoff(attempts: int, floor: float | None) -> float:
    base = min(600.0, 2.0**attempts)
    return max(floor or 0.0, base) * (0.75 + random.random() / 2)  # jitter: no thundering herd


def _lease() -> timedelta:
    return timedelta(seconds=current_app.config.get("OUTBOX_LEASE_SECONDS", 120))


@functools.cache
def _statements() -> dict[str, Any]:
    """The send path's statements, built once (their compiled form is then cached too)."""
    outbox = cast(Table, Outbox.__table__)
    messages = cast(Table, Message.__table__)
    sending = OutboxState.SENDING.value
    by_id = outbox.c.id == bindparam("outbox_id")
    # The id and the created_at: on PostgreSQL the latter names the message's partition.
    message = (messages.c.id == bindparam("message_id")) & (
        messages.c.created_at == bindparam("message_created_at")
    )
    return {
        "claim": update(outbox)
        .where(by_id, outbox.c.state == OutboxState.QUEUED.value)
        .where(outbox.c.next_attempt_at <= bindparam("now"))
        .values(state=sending, lease_until=bindparam("lease_until"), updated_at=bindparam("now"))
        .returning(outbox.c.message_id, outbox.c.attempts),
        "attempt": update(outbox).where(by_id).values(attempts=bindparam("attempt")),
        "sent": update(outbox)
        .where(by_id, outbox.c.state == sending, outbox.c.attempts == bindparam("attempt"))
        .values(state=OutboxState.SENT.value, lease_until=None, updated_at=bindparam("now")),
        # The status only moves on from queued: a status webhook may have moved it further.
        "message_sent": update(messages)
        .where(message)
        .values(
            provider_message_id=bindparam("provider_message_id"),
            provider=bindparam("provider"),
            account_id=bindparam("account_id"),
            status=case(
                (messages.c.status.in_(["queued", "sending"]), bindparam("status")), else_=messages.c.status
            ),
        )
        .returning(messages.c.status),
    }


def _execute(name: str, **params: Any) -> Any:
    return db.session.connection().execute(_statements()[name], params)


@dataclass(frozen=True)
class _Gone:
    """A claimed row whose message was deleted (with its conversation or lead) while it waited."""

    outbox_id: int


def _claim(outbox_id: int) -> SendContext | _Gone | None:
    """queued → sending, atomically, with what the send needs; None when another worker has it or
    it is not due.

    Not committed here: the claim is committed with the attempt it leads to (or with whatever
    happens instead), in one commit before the provider is called. Until then the row is locked,
    and another sender waits for that commit and then finds the row taken. Attempts are counted
    only when the provider is really called (see ``_attempt``), so waiting for pacing, a pause or
    a carrier never uses up retries.
    """
    now = utcnow()
    claimed = _execute("claim", outbox_id=outbox_id, now=now, lease_until=now + _lease()).first()
    if claimed is None:
        return None
    return read_context(outbox_id, claimed.attempts, claimed.message_id) or _Gone(outbox_id)


def _set(outbox_id: int, **values: Any) -> None:
    db.session.execute(update(Outbox).where(Outbox.id == outbox_id).values(**values))


def _requeue(send: SendContext, delay: float, error: str | None = None) -> None:
    extra = {"last_error": error[:2000]} if error else {}
    next_at = utcnow() + timedelta(seconds=delay)
    _set(send.outbox_id, state=OutboxState.QUEUED.value, next_attempt_at=next_at, lease_until=None, **extra)
    db.session.commit()
    _schedule(send, delay)


def _fail(send: SendContext, code: str, title: str, state: str = OutboxState.FAILED.value) -> None:
    _set(send.outbox_id, state=state, lease_until=None, last_error=f"{code}: {title}"[:2000])
    db.session.execute(
        update(Message)
        .where(Message.id == send.message_id, Message.created_at == send.created_at)
        .values(status="failed", error_code=code[:32], error_title=title)
    )
    publish_after_commit(
        send.workspace_id,
        {
            "type": "message.status",
            "message_id": send.message_id,
            "conversation_id": send.conversation_id,
            "status": "failed",
        },
    )
    db.session.commit()
    record_send(send.provider or "", send.account_id, "cancelled" if state == "cancelled" else "failed")


class GatewaySender(Protocol):
    """What the WebQR gateway hands to ``deliver_outbound`` for the number whose session it owns."""

    account_id: int

    def send(self, request: OutboundRequest) -> SendResult: ...


# How long a queue task waits in place for a pacing slot before scheduling its row again instead
# (Huey's scheduler looks for due jobs once a second, and rescheduling costs a commit): in a full
# window slots free one after another, a few milliseconds apart.
SLOT_WAIT_IN_TASK = 1.0


@dataclass(frozen=True)
class _SlotWait:
    seconds: float


def deliver_outbound(
    outbox_id: int, gateway: GatewaySender | None = None, *, wait_for_slot: float = 0.0
) -> str:
    """Send one outbox row. Returns what happened (for logs and tests).

    ``wait_for_slot``: a sender with nothing else to do (a queue task) waits up to this long in
    all for its number's next pacing slot, holding nothing meanwhile (the uncommitted claim is
    rolled back and taken again), instead of scheduling the row again.

    Two commits around the provider call: the claim with the attempt before it, the provider's
    id after it (then one more look for a status that arrived meanwhile). What the send needs is
    read once, as plain columns (``send_context``).

    WebQR numbers are carried by the gateway that owns their session: a worker that finds a
    WebQR carrier leaves the row queued for it.
    """
    deadline = time.monotonic() + wait_for_slot
    while True:
        outcome = _deliver(outbox_id, gateway, deadline)
        if isinstance(outcome, str):
            return outcome
        db.session.rollback()  # only the claim: nothing is held while waiting
        time.sleep(outcome.seconds)


def _deliver(outbox_id: int, gateway: GatewaySender | None, deadline: float) -> str | _SlotWait:
    db.session.flush()  # the caller's pending changes first, as an ORM statement would
    send = _claim(outbox_id)
    if send is None:
        db.session.commit()
        return "not_claimed"
    if isinstance(send, _Gone):
        _set(outbox_id, state=OutboxState.CANCELLED.value, lease_until=None, updated_at=utcnow())
        db.session.commit()
        return "gone"
    if send.author == "broadcast" and send.broadcast_status not in (None, "running"):
        _hold_back(send, send.broadcast_status)
        return "held"
    said_stop = (
        send.lead_id is not None
        and not _opt_out_notice(send.author, send.payload)
        and opted_out_by(send.workspace_id, send.lead_id, send.phone, send.opted_out_at)
    )
    if send.lead_id is None or said_stop or send.lead_deleted_at is not None:
        stopped = _("The lead opted out before this message was sent.")
        _fail(send, "opted_out", stopped, OutboxState.CANCELLED.value)
        return "cancelled"
    found = carrier_for(send.home)
    if found is None:
        _requeue(send, 60, "no number can send")
        return "no_carrier"
    carrier = account_view(found)  # read now: nothing of it is loaded again after the commit
    if carrier.provider == "webqr" and (gateway is None or gateway.account_id != carrier.id):
        _set(outbox_id, state=OutboxState.QUEUED.value, lease_until=None)
        db.session.commit()
        return "gateway"
    media: OutboundMedia | None = None
    if send.media_file_id is not None:  # before pacing: a file still being prepared takes no slot
        waiting = _media_for(send, carrier)
        if isinstance(waiting, str):
            return waiting
        media = waiting
    now = utcnow()
    if carrier.paused_until and carrier.paused_until > now:
        _requeue(send, (carrier.paused_until - now).total_seconds())
        return "paused"
    try:
        wait = pacing.reserve(carrier)
    except Exception:  # the pacing store unreachable: nothing taken, nothing sent; tried again shortly
        log.exception("outbox %s: no pacing slot could be taken; trying again shortly", outbox_id)
        _requeue(send, RESTAMP_RETRY)
        return "paced"
    if wait > 0:
        if time.monotonic() + wait <= deadline:
            return _SlotWait(wait)
        _requeue(send, wait)
        return "paced"
    request = OutboundRequest(
        to=send.phone or send.bsuid or "",
        type=send.type,
        text=send.text,
        payload=dict(send.payload or {}),
        recipient_bsuid=send.bsuid,
        media=media,
    )
    attempt = _attempt(send)
    # The slot was taken before the commit (so no two senders count on it); it goes in flight now,
    # as the request leaves, and counts from the answer on (``pacing.settle``).
    try:
        wait = pacing.restamp(carrier)
    except Exception:  # Redis unreachable: the provider was not called, so the attempt doesn't count
        log.exception("outbox %s: the pacing slot could not be stamped; trying again shortly", outbox_id)
        wait = RESTAMP_RETRY
    if wait > 0:
        _unclaim(send, attempt, wait)
        return "paced"
    try:
        result = _call_provider(carrier, request, gateway)
    except ProviderError as error:
        return _handle_error(send, attempt, carrier, error)
    except Exception as exc:  # a bug or an unreadable secret: retry later, never stay stuck in "sending"
        log.exception("send of outbox %s raised", outbox_id)
        unexpected = ProviderError(
            "internal", f"{exc.__class__.__name__}: {exc}"[:300], action=ErrorAction.RETRY, retry_after=60
        )
        return _handle_error(send, attempt, carrier, unexpected)
    return _record_sent(send, attempt, carrier, result)


def _call_provider(
    carrier: WhatsAppAccount, request: OutboundRequest, gateway: GatewaySender | None
) -> SendResult:
    """The request itself; its pacing slot counts from the answer, whatever the answer."""
    try:
        if gateway is not None:
            return gateway.send(request)
        return get_provider(carrier.provider).send(carrier, request)
    finally:
        pacing.settle(carrier)


UPLOAD_KEPT = timedelta(days=29)  # Meta keeps an uploaded file 30 days


def uploaded_media_id(file: Any, carrier: WhatsAppAccount) -> str | None:
    """The Cloud API id this file already has on this number, while Meta still keeps it."""
    if carrier.provider != "cloud":
        return None
    entry = (file.provider_uploads or {}).get(str(carrier.id))
    if not isinstance(entry, dict) or not entry.get("id"):
        return None
    try:
        at = datetime.fromisoformat(str(entry.get("at")))
    except ValueError:
        return None
    return str(entry["id"]) if utcnow() - at < UPLOAD_KEPT else None


def _remember_upload(media_file_id: int, carrier: WhatsAppAccount, media_id: str) -> None:
    from crm.media.models import MediaFile

    file = db.session.get(MediaFile, media_file_id)
    if file is not None:
        uploads = dict(file.provider_uploads or {})
        uploads[str(carrier.id)] = {"id": media_id, "at": utcnow().isoformat()}
        file.provider_uploads = uploads


def _hold_back(send: SendContext, status: str) -> None:
    from crm.broadcasts.dispatch import hold_back

    hold_back(send.outbox_id, send.message_id, status)


def _held_back(send: SendContext) -> bool:
    from crm.broadcasts.dispatch import held_back

    return held_back(send.outbox_id, send.message_id)


def _media_for(send: SendContext, carrier: WhatsAppAccount) -> OutboundMedia | str:
    """The message's file, ready to send; or what happened instead (still being prepared: wait
    for it; could not be prepared, or too large for the number that carries it: fail)."""
    from crm.media.limits import human_size, limit_for
    from crm.media.models import MediaFile, MediaStatus
    from crm.media.services import open_stored, read_bytes

    file = db.session.get(MediaFile, send.media_file_id)
    if file is None:
        _fail(send, "media_missing", _("The attached file was deleted before it was sent."))
        return "failed"
    if file.status == MediaStatus.FAILED.value:
        _fail(send, file.error_code or "media_invalid", file.error_title or _("The file can't be sent."))
        return "failed"
    if not file.is_ready:
        if file.status == MediaStatus.PENDING.value:
            _enqueue_prepare_after_commit(file.id)  # in case its job was lost; preparing is claimed once
        _park(send.outbox_id)  # preparing the file makes the row due again when it is done
        return "media_pending"
    limit = limit_for(carrier.provider, file.kind).max_bytes
    if (file.size or 0) > limit:
        _fail(
            send,
            "media_too_large",
            _("The file (%(size)s) is larger than this number can send (%(limit)s).",
              size=human_size(file.size or 0), limit=human_size(limit)),
        )  # fmt: skip
        return "failed"
    storage_key = file.storage_key or ""  # read now: no query (and no transaction) inside the send
    return OutboundMedia(
        kind=file.kind,
        mime_type=file.mime_type,
        filename=file.filename,
        size=file.size or 0,
        load=lambda: read_bytes(storage_key),
        open=lambda: open_stored(storage_key),
        voice=file.voice,
        width=file.width,
        height=file.height,
        uploaded_id=uploaded_media_id(file, carrier),
    )


MEDIA_WAIT = timedelta(hours=1)


def _park(outbox_id: int) -> None:
    """Out of the way while its file is prepared (so no sender, the WebQR gateway's included, keeps
    picking it up); ``release_for_media`` makes it due again. Parked rows that outlive this are
    looked at again by the reconciler."""
    _set(outbox_id, state=OutboxState.QUEUED.value, lease_until=None, next_attempt_at=utcnow() + MEDIA_WAIT)
    db.session.commit()


def release_for_media(outbox_ids: list[int]) -> None:
    """The file of these rows is ready: due now, and handed to the queue."""
    if not outbox_ids:
        return
    db.session.execute(
        update(Outbox)
        .where(Outbox.id.in_(outbox_ids), Outbox.state == OutboxState.QUEUED.value)
        .values(next_attempt_at=utcnow())
    )
    db.session.commit()
    _enqueue_deliveries(outbox_ids)


def _attempt(send: SendContext) -> int:
    """Count this provider call and commit it with the claim, so no transaction stays open across
    the call."""
    attempt = send.attempts + 1
    _execute("attempt", outbox_id=send.outbox_id, attempt=attempt)
    if attempt > 1:
        log.warning(
            "outbox %s attempt %d: if an earlier attempt reached the provider, this is a duplicate",
            send.outbox_id,
            attempt,
        )
    db.session.commit()
    return attempt


RESTAMP_RETRY = 5.0  # seconds before trying again when the pacing store could not be reached


def _unclaim(send: SendContext, attempt: int, wait: float) -> None:
    """The slot taken for this attempt ran out before the request could leave, and none is free:
    the provider was not called, so the attempt is not counted and the row waits again."""
    owned = db.session.execute(
        update(Outbox)
        .where(
            Outbox.id == send.outbox_id,
            Outbox.state == OutboxState.SENDING.value,
            Outbox.attempts == attempt,
        )
        .values(
            state=OutboxState.QUEUED.value,
            attempts=attempt - 1,
            lease_until=None,
            next_attempt_at=utcnow() + timedelta(seconds=wait),
        )
    ).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    if owned:
        _schedule(send, wait)


def _record_sent(send: SendContext, attempt: int, carrier: WhatsAppAccount, result: SendResult) -> str:
    """Record the provider's id, only if this attempt still owns the row (its lease may have run
    out and another worker may have taken it: then the send was a duplicate, and it is logged)."""
    owned = _execute("sent", outbox_id=send.outbox_id, attempt=attempt, now=utcnow()).rowcount
    if not owned:
        log.error(
            "outbox %s: provider accepted %s after the row was taken over: duplicate send",
            send.outbox_id,
            result.provider_message_id,
        )
        db.session.rollback()
        return "duplicate"
    status = _execute(
        "message_sent",
        message_id=send.message_id,
        message_created_at=send.created_at,
        provider_message_id=result.provider_message_id,
        provider=carrier.provider,
        account_id=carrier.id,
        status=result.status,
    ).scalar()
    if status is None:  # deleted while it was being sent: the row is done, there is nothing to mark
        log.warning("outbox %s: its message was deleted while it was being sent", send.outbox_id)
        db.session.commit()
        return "sent"
    record_key(carrier.id, result.provider_message_id, send.message_id, send.created_at)
    if result.uploaded_media_id and send.media_file_id is not None:
        _remember_upload(send.media_file_id, carrier, result.uploaded_media_id)
    apply_parked(send.workspace_id, carrier.id, result.provider_message_id)
    publish_after_commit(
        send.workspace_id,
        {
            "type": "message.status",
            "message_id": send.message_id,
            "conversation_id": send.conversation_id,
            "status": status,
        },
    )
    db.session.commit()
    # A status webhook may have parked its row while this transaction was open (READ COMMITTED:
    # neither saw the other). Look again now that the id is committed; applying is idempotent.
    apply_parked(send.workspace_id, carrier.id, result.provider_message_id)
    db.session.commit()
    record_send(carrier.provider, carrier.id, "sent")
    return "sent"


def _handle_error(send: SendContext, attempt: int, carrier: WhatsAppAccount, error: ProviderError) -> str:
    # The title is Meta's free text and may quote what was sent: at INFO only the code.
    log.info("send of outbox %s via account %s failed: %s", send.outbox_id, carrier.id, error.code)
    log.debug("send of outbox %s failed: %s", send.outbox_id, error.title)
    record_send_error(carrier.provider, error.code)
    number = db.session.get(WhatsAppAccount, carrier.id)  # the stored one: pauses and health go there
    if number is not None and error.pause_account_for:
        health.pause(number, error.pause_account_for)
    if error.action is ErrorAction.ACCOUNT_DOWN:
        if number is not None:
            health.mark_health(number, error.health, f"send_error:{error.code}", error.title)
        db.session.commit()
        if send.author == "broadcast" and _held_back(send):
            return "held"  # its broadcast paused for this: the recipient waits for the resume
        home = db.session.get(WhatsAppAccount, send.home.id)
        if (home is not None and carrier_for(home) is not None) or error.health == "degraded":
            # another number (or later) carries it
            _requeue(send, 1, f"{error.code}: {error.title}")
            return "rerouted"
        _fail(send, error.code, error.title)
        return "failed"
    if error.action is ErrorAction.RETRY and attempt < MAX_ATTEMPTS:
        _requeue(send, _backoff(attempt, error.retry_after), f"{error.code}: {error.title}")
        return "retry"
    title = error.title
    if error.needs_template:
        title = _(
            "%(title)s (the customer last wrote more than 24 hours ago: send an approved template)",
            title=error.title,
        )
    _fail(send, error.code, title)
    return "failed"


def _enqueue_deliveries(outbox_ids: list[int]) -> None:
    """Hand committed rows to the queue, each at its place (``delivery_priority`` of its author)."""
    from crm.whatsapp.tasks import deliver_task
    from crm.worker import huey

    if not outbox_ids:
        return
    authors = dict(
        db.session.execute(
            select(Outbox.id, Message.author)
            .join(Message, Message.id == Outbox.message_id)
            .where(Outbox.id.in_(outbox_ids))
        )
        .tuples()
        .all()
    )
    for outbox_id in outbox_ids:
        huey.enqueue(deliver_task.s(outbox_id, priority=delivery_priority(authors.get(outbox_id))))


def reconcile_outbox(stale_after: timedelta = STALE_QUEUED) -> dict[str, int]:
    """Re-enqueue due rows whose job was lost (Redis flushed, worker killed), requeue rows whose
    lease ran out, and fail rows that keep failing. PostgreSQL is the source of truth; the queue
    is only a doorbell. Safe to run in several processes at once: every change is a conditional
    UPDATE that re-checks its condition, and only the rows it changed are enqueued."""
    now = utcnow()
    gave_up = (
        db.session.execute(
            update(Outbox)
            .where(
                Outbox.state.in_([OutboxState.SENDING.value, OutboxState.QUEUED.value]),
                Outbox.attempts >= MAX_ATTEMPTS,
                or_(Outbox.lease_until.is_(None), Outbox.lease_until < now),
            )
            .values(state=OutboxState.FAILED.value, lease_until=None, updated_at=now)
            .returning(Outbox.message_id)
        )
        .scalars()
        .all()
    )
    failed_messages: list[tuple[str, int]] = []
    if gave_up:
        failed_messages = [
            (row.provider, row.account_id)
            for row in db.session.execute(
                update(Message)
                .where(Message.id.in_(gave_up), Message.status.in_(["queued", "sending"]))
                .values(
                    status="failed",
                    error_code="retries_exhausted",
                    error_title=_("Sending kept failing; gave up after %(n)d attempts.", n=MAX_ATTEMPTS),
                )
                .returning(Message.provider, Message.account_id)
            )
        ]
    expired = (
        db.session.execute(
            update(Outbox)
            .where(Outbox.state == OutboxState.SENDING.value, Outbox.lease_until < now)
            .values(state=OutboxState.QUEUED.value, next_attempt_at=now, lease_until=None, updated_at=now)
            .returning(Outbox.id)
        )
        .scalars()
        .all()
    )
    if expired:
        log.warning("requeued %d outbox rows whose lease expired (possible duplicates)", len(expired))
    stale = list(
        db.session.scalars(
            select(Outbox.id)
            .where(Outbox.state == OutboxState.QUEUED.value, Outbox.next_attempt_at <= now - stale_after)
            .limit(5000)
        )
    )
    swept = sweep_parked()
    db.session.commit()
    for provider, account_id in failed_messages:
        record_send(provider, account_id, "failed")
    _enqueue_deliveries(list(dict.fromkeys([*expired, *stale])))
    return {"expired": len(expired), "requeued": len(stale), "failed": len(gave_up), "parked_applied": swept}
