"""Queue tasks for broadcasts: the dispatcher's ticks and the reconciler that keeps them alive."""

from __future__ import annotations

from datetime import timedelta

from huey import crontab

from crm.worker import huey, in_app_context

OVERDUE = timedelta(seconds=30)


@huey.task(priority=10)  # ahead of the deliveries it queued (where the queue has priorities)
@in_app_context
def dispatch_task(broadcast_id: int) -> str:
    """One tick, then the next one scheduled (a chain per running broadcast)."""
    from crm.broadcasts.dispatch import dispatch

    tick = dispatch(broadcast_id)
    if tick.next_in is not None and not huey.immediate:
        dispatch_task.schedule(args=(broadcast_id,), delay=tick.next_in)
    return tick.status


@huey.periodic_task(crontab(minute="*"))
@in_app_context
def reconcile_broadcasts_task() -> list[int]:
    """Every minute: start scheduled broadcasts whose time came, and restart the ticks of running
    ones whose job was lost (a worker killed, Redis restarted empty). The database says what is
    running; the queue only rings the bell."""
    return wake_broadcasts(OVERDUE)


def wake_broadcasts(overdue: timedelta) -> list[int]:
    """Enqueue a tick for each broadcast that is due or whose ticks stopped ``overdue`` ago."""
    from crm.broadcasts.services import due_for_wake
    from crm.db import utcnow

    woken = due_for_wake(utcnow(), overdue)
    for broadcast_id in woken:
        dispatch_task(broadcast_id)
    return woken
