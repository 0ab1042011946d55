"""What an admin needs to see of the machinery: the queue, Redis memory, sends waiting, broadcasts.

Read-only and cheap (a few counts and one ``INFO memory``); the page says what each figure means.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from sqlalchemy import func, select

from crm.broadcasts.models import Broadcast, BroadcastStatus
from crm.extensions import db
from crm.whatsapp.models import Outbox, OutboxState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RedisMemory:
    used: int
    peak: int
    maxmemory: int  # 0: no limit
    policy: str

    @property
    def evicts(self) -> bool:
        """Redis may drop keys (queued jobs, rate windows) when full: it must be ``noeviction``."""
        return self.policy != "noeviction"


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


def redis_memory() -> RedisMemory:
    from crm.redis import get_redis

    info = get_redis().info("memory")
    return RedisMemory(
        used=int(info.get("used_memory", 0)),
        peak=int(info.get("used_memory_peak", 0)),
        maxmemory=int(info.get("maxmemory", 0)),
        policy=str(info.get("maxmemory_policy", "")),
    )


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
    )
