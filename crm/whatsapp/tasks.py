"""Queue tasks for messaging: ids in, one service call, a fresh app context each."""

from __future__ import annotations

from huey import crontab

from crm.worker import huey, in_app_context


@huey.task()
@in_app_context
def deliver_task(outbox_id: int) -> str:
    from crm.whatsapp.outbox import deliver_outbound

    return deliver_outbound(outbox_id)


@huey.periodic_task(crontab(minute="*"))
@in_app_context
def reconcile_outbox_task() -> dict[str, int]:
    from crm.whatsapp.outbox import reconcile_outbox

    return reconcile_outbox()
