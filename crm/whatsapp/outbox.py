"""Outbound messages, exactly once: the outbox.

``queue_outbound`` writes the message and its outbox row in the caller's transaction and enqueues
``deliver`` after the commit. ``deliver_outbound`` claims the row (queued → sending, with a
lease), calls the provider outside any transaction, then records the provider's id. If the
process dies between the provider accepting and our commit, the lease runs out and the row is
sent again: the one duplicate we can't rule out, and it is logged.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from crm.db import utcnow
from crm.errors import Conflict
from crm.extensions import db
from crm.inbox.keys import record_key
from crm.inbox.models import Conversation, Message
from crm.leads.consent import opted_out
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


def enqueue_delivery_after_commit(outbox_id: int) -> None:
    from crm.whatsapp.tasks import deliver_task
    from crm.worker import enqueue_after_commit

    enqueue_after_commit(deliver_task, outbox_id)


def _schedule(outbox_id: int, delay: float) -> None:
    from crm.whatsapp.tasks import deliver_task
    from crm.worker import huey

    if huey.immediate:
        return  # tests drive retries by hand; the reconciler also picks due rows up
    deliver_task.schedule(args=(outbox_id,), delay=max(delay, 0.05))


def _backoff(attempts: int, floor: float | None) -> float:
    base = min(600.0, 2.0**attempts)
    return max(floor or 0.0, base) * (0.75 + random.random() / 2)  # jitter: no thundering herd


def _lease() -> timedelta:
    return timedelta(seconds=current_app.config.get("OUTBOX_LEASE_SECONDS", 120))


def _claim(outbox_id: int) -> Outbox | None:
    """queued → sending, atomically; None when another worker has it or it is not due.

    Attempts are counted only when the provider is really called (see ``_attempt``), so waiting
    for pacing, a pause or a carrier never uses up retries.
    """
    now = utcnow()
    claimed = db.session.execute(
        update(Outbox)
        .where(
            Outbox.id == outbox_id, Outbox.state == OutboxState.QUEUED.value, Outbox.next_attempt_at <= now
        )
        .values(state=OutboxState.SENDING.value, lease_until=now + _lease(), updated_at=now)
    ).rowcount  # type: ignore[attr-defined]
    db.session.commit()
    return db.session.get(Outbox, outbox_id) if claimed else None


def _requeue(row: Outbox, delay: float, error: str | None = None) -> None:
    row.state = OutboxState.QUEUED.value
    row.next_attempt_at = utcnow() + timedelta(seconds=delay)
    row.lease_until = None
    if error:
        row.last_error = error[:2000]
    db.session.commit()
    _schedule(row.id, delay)


def _fail(
    row: Outbox, message: Message, code: str, title: str, state: str = OutboxState.FAILED.value
) -> None:
    row.state = state
    row.lease_until = None
    row.last_error = f"{code}: {title}"[:2000]
    message.status = "failed"
    message.error_code = code[:32]
    message.error_title = title
    publish_after_commit(
        message.workspace_id,
        {
            "type": "message.status",
            "message_id": message.id,
            "conversation_id": message.conversation_id,
            "status": "failed",
        },
    )
    db.session.commit()
    record_send(message.provider or "", message.account_id, "cancelled" if state == "cancelled" else "failed")


class GatewaySender(Protocol):
    """What the WebQR gateway hands to ``deliver_outbound`` for the number whose session it owns."""

    account_id: int

    def send(self, request: OutboundRequest) -> SendResult: ...


def deliver_outbound(outbox_id: int, gateway: GatewaySender | None = None) -> str:
    """Send one outbox row. Returns what happened (for logs and tests).

    WebQR numbers are carried by the gateway that owns their session: a worker that finds a
    WebQR carrier leaves the row queued for it.
    """
    row = _claim(outbox_id)
    if row is None:
        return "not_claimed"
    message = db.session.get(Message, row.message_id)
    if message is None:  # deleted with its conversation or lead while it waited
        row.state, row.lease_until, row.updated_at = OutboxState.CANCELLED.value, None, utcnow()
        db.session.commit()
        return "gone"
    if message.author == "broadcast" and _held_back(row, message):
        return "held"
    conversation = db.session.get(Conversation, message.conversation_id)
    assert conversation is not None
    lead = db.session.get(Lead, conversation.lead_id)
    said_stop = lead is not None and not _opt_out_notice(message.author, message.payload) and opted_out(lead)
    if lead is None or said_stop or lead.deleted_at is not None:
        _fail(
            row,
            message,
            "opted_out",
            _("The lead opted out before this message was sent."),
            OutboxState.CANCELLED.value,
        )
        return "cancelled"
    home = db.session.get(WhatsAppAccount, conversation.account_id)
    assert home is not None
    carrier = carrier_for(home)
    if carrier is None:
        _requeue(row, 60, "no number can send")
        return "no_carrier"
    if carrier.provider == "webqr" and (gateway is None or gateway.account_id != carrier.id):
        _release(row)
        return "gateway"
    media: OutboundMedia | None = None
    if message.media_file_id is not None:  # before pacing: a file still being prepared takes no slot
        waiting = _media_for(row, message, carrier)
        if isinstance(waiting, str):
            return waiting
        media = waiting
    now = utcnow()
    if carrier.paused_until and carrier.paused_until > now:
        _requeue(row, (carrier.paused_until - now).total_seconds())
        return "paused"
    wait = pacing.reserve(carrier)
    if wait > 0:
        _requeue(row, wait)
        return "paced"
    request = OutboundRequest(
        to=lead.phone or lead.bsuid or "",
        type=message.type,
        text=message.text,
        payload=dict(message.payload or {}),
        recipient_bsuid=lead.bsuid,
        media=media,
    )
    attempt = _attempt(row)
    try:
        result = (
            gateway.send(request)
            if gateway is not None
            else get_provider(carrier.provider).send(carrier, request)
        )
    except ProviderError as error:
        return _handle_error(row, message, carrier, error)
    except Exception as exc:  # a bug or an unreadable secret: retry later, never stay stuck in "sending"
        log.exception("send of outbox %s raised", row.id)
        unexpected = ProviderError(
            "internal", f"{exc.__class__.__name__}: {exc}"[:300], action=ErrorAction.RETRY, retry_after=60
        )
        return _handle_error(row, message, carrier, unexpected)
    return _record_sent(row.id, attempt, message.id, carrier, result)


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


def _held_back(row: Outbox, message: Message) -> bool:
    from crm.broadcasts.dispatch import held_back

    return held_back(row, message)


def _media_for(row: Outbox, message: Message, carrier: WhatsAppAccount) -> OutboundMedia | str:
    """The message's file, ready to send; or what happened instead (still being prepared: wait
    for it; could not be prepared, or too large for the number that carries it: fail)."""
    from crm.media.limits import human_size, limit_for
    from crm.media.models import MediaFile, MediaStatus
    from crm.media.services import open_stored, read_bytes

    file = db.session.get(MediaFile, message.media_file_id)
    if file is None:
        _fail(row, message, "media_missing", _("The attached file was deleted before it was sent."))
        return "failed"
    if file.status == MediaStatus.FAILED.value:
        _fail(
            row, message, file.error_code or "media_invalid", file.error_title or _("The file can't be sent.")
        )
        return "failed"
    if not file.is_ready:
        if file.status == MediaStatus.PENDING.value:
            _enqueue_prepare_after_commit(file.id)  # in case its job was lost; preparing is claimed once
        _park(row)  # preparing the file makes the row due again when it is done
        return "media_pending"
    limit = limit_for(carrier.provider, file.kind).max_bytes
    if (file.size or 0) > limit:
        _fail(
            row,
            message,
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


def _park(row: Outbox) -> None:
    """Out of the way while its file is prepared (so no sender, the WebQR gateway's included, keeps
    picking it up); ``release_for_media`` makes it due again. Parked rows that outlive this are
    looked at again by the reconciler."""
    row.state = OutboxState.QUEUED.value
    row.lease_until = None
    row.next_attempt_at = utcnow() + MEDIA_WAIT
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
    from crm.whatsapp.tasks import deliver_task

    for outbox_id in outbox_ids:
        deliver_task(outbox_id)


def _release(row: Outbox) -> None:
    row.state = OutboxState.QUEUED.value
    row.lease_until = None
    db.session.commit()


def _attempt(row: Outbox) -> int:
    """Count this provider call and commit, so no transaction stays open across it."""
    row.attempts += 1
    attempt = row.attempts
    if attempt > 1:
        log.warning(
            "outbox %s attempt %d: if an earlier attempt reached the provider, this is a duplicate",
            row.id,
            attempt,
        )
    db.session.commit()
    return attempt


def _record_sent(
    outbox_id: int, attempt: int, message_id: int, carrier: WhatsAppAccount, result: SendResult
) -> str:
    """Record the provider's id, only if this attempt still owns the row (its lease may have run
    out and another worker may have taken it: then the send was a duplicate, and it is logged)."""
    owned = db.session.execute(
        update(Outbox)
        .where(Outbox.id == outbox_id, Outbox.state == OutboxState.SENDING.value, Outbox.attempts == attempt)
        .values(state=OutboxState.SENT.value, lease_until=None, updated_at=utcnow())
    ).rowcount  # type: ignore[attr-defined]
    message = db.session.get(Message, message_id)
    assert message is not None
    if not owned:
        log.error(
            "outbox %s: provider accepted %s after the row was taken over: duplicate send",
            outbox_id,
            result.provider_message_id,
        )
        db.session.rollback()
        return "duplicate"
    message.provider_message_id = result.provider_message_id
    record_key(carrier.id, result.provider_message_id, message.id, message.created_at)
    message.provider = carrier.provider
    if result.uploaded_media_id and message.media_file_id is not None:
        _remember_upload(message.media_file_id, carrier, result.uploaded_media_id)
    message.account_id = carrier.id
    if message.status in ("queued", "sending"):
        message.status = result.status
    db.session.flush()
    apply_parked(message.workspace_id, carrier.id, result.provider_message_id)
    publish_after_commit(
        message.workspace_id,
        {
            "type": "message.status",
            "message_id": message.id,
            "conversation_id": message.conversation_id,
            "status": message.status,
        },
    )
    db.session.commit()
    # A status webhook may have parked its row while this transaction was open (READ COMMITTED:
    # neither saw the other). Look again now that the id is committed; applying is idempotent.
    apply_parked(message.workspace_id, carrier.id, result.provider_message_id)
    db.session.commit()
    record_send(carrier.provider, carrier.id, "sent")
    return "sent"


def _handle_error(row: Outbox, message: Message, carrier: WhatsAppAccount, error: ProviderError) -> str:
    # The title is Meta's free text and may quote what was sent: at INFO only the code.
    log.info("send of outbox %s via account %s failed: %s", row.id, carrier.id, error.code)
    log.debug("send of outbox %s failed: %s", row.id, error.title)
    record_send_error(carrier.provider, error.code)
    if error.pause_account_for:
        health.pause(carrier, error.pause_account_for)
    if error.action is ErrorAction.ACCOUNT_DOWN:
        health.mark_health(carrier, error.health, f"send_error:{error.code}", error.title)
        db.session.commit()
        if message.author == "broadcast" and _held_back(row, message):
            return "held"  # its broadcast paused for this: the recipient waits for the resume
        conversation = db.session.get(Conversation, message.conversation_id)
        home = db.session.get(WhatsAppAccount, conversation.account_id) if conversation else None
        if (home is not None and carrier_for(home) is not None) or error.health == "degraded":
            _requeue(row, 1, f"{error.code}: {error.title}")  # another number (or later) will carry it
            return "rerouted"
        _fail(row, message, error.code, error.title)
        return "failed"
    if error.action is ErrorAction.RETRY and row.attempts < MAX_ATTEMPTS:
        _requeue(row, _backoff(row.attempts, error.retry_after), f"{error.code}: {error.title}")
        return "retry"
    title = error.title
    if error.needs_template:
        title = _(
            "%(title)s (the customer last wrote more than 24 hours ago: send an approved template)",
            title=error.title,
        )
    _fail(row, message, error.code, title)
    return "failed"


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
    from crm.whatsapp.tasks import deliver_task

    for outbox_id in dict.fromkeys([*expired, *stale]):
        deliver_task(outbox_id)
    return {"expired": len(expired), "requeued": len(stale), "failed": len(gave_up), "parked_applied": swept}
