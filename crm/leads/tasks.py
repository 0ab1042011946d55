"""Queue tasks for leads: ids in, one service call, a fresh app context each."""

from __future__ import annotations

from huey import crontab

from crm.worker import huey, in_app_context


@huey.task(retries=3, retry_delay=10)
@in_app_context
def consent_keyword_task(workspace_id: int, message_id: int) -> str:
    from crm.leads.consent import apply_consent_keyword

    return apply_consent_keyword(workspace_id, message_id)


@huey.periodic_task(crontab(hour="4", minute="7"))
@in_app_context
def purge_trash_task() -> int:
    """Every night: leads past their workspace's days in the trash are purged."""
    from crm.leads.trash import purge_expired_trash

    return purge_expired_trash()
