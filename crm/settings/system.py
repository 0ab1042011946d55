"""What an admin needs to see of the machinery: the queue, Redis memory, sends waiting, broadcasts,
the numbers' health, which workers and gateways are alive, and the latest warnings and errors.

Read-only and cheap (a few counts over small tables, one ``INFO memory`` with a short timeout);
the page says what each figure means.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from flask_babel import format_timedelta
from sqlalchemy import func, select

from crm.broadcasts.models import Broadcast, BroadcastStatus
from crm.db import utcnow
from crm.extensions import db
from crm.ops import heartbeat
from crm.ops.probes import RedisMemory, redis_memory
from crm.ops.recent_errors import RecentError, recent
from crm.whatsapp.models import Outbox, OutboxState, WebQRSession, WhatsAppAccount

log = logging.getLogger(__name__)

__all__ = ["RedisMemory", "SystemStatus", "redis_memory", "system_status"]


def human_age(seconds: float) -> str:
    """A duration as people say it (4 minutes, 2 hours), in the reader's language."""
    return format_timedelta(timedelta(seconds=seconds), threshold=0.9)


@dataclass(frozen=True)
class NumberHealth:
    id: int
    name: str
    phone: str | None
    provider: str
    status: str  # active | disabled
    health: str
    health_reason: str | None
    health_changed_at: datetime | None
    paused_until: datetime | None  # only while in the future
    webqr_state: str | None


@dataclass(frozen=True)
class ProcessBeat:
    kind: str  # worker | gateway
    host: str
    pid: int
    started_at: datetime
    seen_at: datetime
    age_seconds: int
    stale: bool
    info: dict[str, Any]

    @property
    def age(self) -> str:
        return human_age(self.age_seconds)


@dataclass(frozen=True)
class SystemStatus:
    mode: str  # embedded | scaled
    database: str
    queue_pending: int | None
    queue_scheduled: int | None
    queue_results: int | None
    redis: RedisMemory | None
    redis_error: str | None
    sends_queued: int
    sends_in_flight: int
    oldest_queued: datetime | None
    broadcasts_running: int
    ai_queue_pending: int | None = None  # AI answers have a queue of their own
    ai_replies_owed: int = 0  # answers this workspace's customers are waiting for
    oldest_due_age_seconds: int | None = None  # the oldest send that is due, waiting this long
    numbers: list[NumberHealth] = field(default_factory=list)
    processes: list[ProcessBeat] = field(default_factory=list)
    stale_after_seconds: int = 45
    consumer_needed: bool = True  # tasks run on a queue (not inline)
    consumer_alive: bool = False
    gateway_needed: bool = False  # some workspace has a WebQR number in use
    gateway_alive: bool = False
    recent_errors: list[RecentError] = field(default_factory=list)

    @property
    def oldest_due_age(self) -> str | None:
        return None if self.oldest_due_age_seconds is None else human_age(self.oldest_due_age_seconds)


def system_status(workspace_id: int) -> SystemStatus:
    from crm.ai.models import AIReply
    from crm.worker import ai_huey, huey

    scaled = bool(current_app.config.get("REDIS_URL"))
    redis, redis_error = None, None
    if scaled:
        try:
            redis = redis_memory()
        except Exception as exc:  # the page must show Redis is down rather than fail
            log.warning("system page: Redis unreachable: %s", exc)
            redis_error = exc.__class__.__name__
    pending = scheduled = results = ai_pending = None
    if not huey.immediate:
        try:
            pending, scheduled = huey.pending_count(), huey.scheduled_count()
            results = huey.storage.result_store_size()
            ai_pending = ai_huey.pending_count() + ai_huey.scheduled_count()
        except Exception as exc:
            log.warning("system page: queue unreachable: %s", exc)
    by_state: dict[str, int] = dict(
        db.session.execute(  # type: ignore[arg-type]
            select(Outbox.state, func.count())
            .where(Outbox.state.in_([OutboxState.QUEUED.value, OutboxState.SENDING.value]))
            .group_by(Outbox.state)
        ).all()
    )
    oldest = db.session.scalar(
        select(func.min(Outbox.next_attempt_at)).where(Outbox.state == OutboxState.QUEUED.value)
    )
    running = db.session.scalar(
        select(func.count())
        .select_from(Broadcast)
        .where(Broadcast.workspace_id == workspace_id, Broadcast.status == BroadcastStatus.RUNNING.value)
    )
    now = utcnow()
    oldest_due = db.session.scalar(
        select(func.min(Outbox.next_attempt_at)).where(
            Outbox.state == OutboxState.QUEUED.value, Outbox.next_attempt_at <= now
        )
    )
    processes = _processes()
    return SystemStatus(
        mode="scaled" if scaled else "embedded",
        database=db.engine.dialect.name,
        queue_pending=pending,
        queue_scheduled=scheduled,
        queue_results=results,
        redis=redis,
        redis_error=redis_error,
        sends_queued=int(by_state.get(OutboxState.QUEUED.value, 0)),
        sends_in_flight=int(by_state.get(OutboxState.SENDING.value, 0)),
        oldest_queued=oldest,
        broadcasts_running=int(running or 0),
        ai_queue_pending=ai_pending,
        ai_replies_owed=int(
            db.session.scalar(
                select(func.count())
                .select_from(AIReply)
                .where(AIReply.workspace_id == workspace_id, AIReply.status.in_(("pending", "answering")))
            )
            or 0
        ),
        oldest_due_age_seconds=int((now - oldest_due).total_seconds()) if oldest_due else None,
        numbers=numbers_health(workspace_id),
        processes=processes,
        stale_after_seconds=int(heartbeat.stale_after().total_seconds()),
        consumer_needed=not current_app.config.get("HUEY_IMMEDIATE"),
        consumer_alive=any(p.kind == heartbeat.WORKER and not p.stale for p in processes),
        gateway_needed=_webqr_in_use(),
        gateway_alive=any(p.kind == heartbeat.GATEWAY and not p.stale for p in processes),
        recent_errors=recent(workspace_id),
    )


def numbers_health(workspace_id: int) -> list[NumberHealth]:
    """This workspace's numbers: what their provider last said about them, and since when."""
    now = utcnow()
    rows = db.session.execute(
        select(WhatsAppAccount, WebQRSession.state)
        .outerjoin(WebQRSession, WebQRSession.account_id == WhatsAppAccount.id)
        .where(WhatsAppAccount.workspace_id == workspace_id)
        .order_by(WhatsAppAccount.name, WhatsAppAccount.id)
    ).all()
    return [
        NumberHealth(
            id=account.id,
            name=account.name,
            phone=account.phone,
            provider=account.provider,
            status=account.status,
            health=account.health,
            health_reason=account.health_reason,
            health_changed_at=account.health_changed_at,
            paused_until=account.paused_until
            if account.paused_until and account.paused_until > now
            else None,
            webqr_state=state if account.provider == "webqr" else None,
        )
        for account, state in rows
    ]


def _processes() -> list[ProcessBeat]:
    now = utcnow()
    return [
        ProcessBeat(
            kind=row.kind,
            host=row.host,
            pid=row.pid,
            started_at=row.started_at,
            seen_at=row.seen_at,
            age_seconds=max(0, int((now - row.seen_at).total_seconds())),
            stale=heartbeat.is_stale(row, now),
            info=dict(row.info or {}),
        )
        for row in heartbeat.heartbeats()
    ]


def _webqr_in_use() -> bool:
    return (
        db.session.scalar(
            select(WhatsAppAccount.id)
            .where(WhatsAppAccount.provider == "webqr", WhatsAppAccount.status == "active")
            .limit(1)
        )
        is not None
    )
