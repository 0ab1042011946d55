"""Queue tasks for leads: ids in, one service call, a fresh app context each."""

from __future__ import annotations

from huey import crontab

from crm.worker import huey, in_app_context


@huey.task(retries=3, retry_delay=10)
@in_app_context
def consent_keyword_task(workspace_id: int, message_id: int) -> str:
    from crm.leads.consent import apply_consent_keyword

    return apply_consent_keyword(workspace_id, message_id)


@huey.task(retries=3, retry_delay=30)
@in_app_context
def purge_trashed_task(workspace_id: int, lead_ids: list[int]) -> int:
    """ "Delete forever" of a selection in the trash (leads restored meanwhile are left alone)."""
    from crm.leads.trash import purge_trashed

    return purge_trashed(workspace_id, lead_ids)


@huey.periodic_task(crontab(hour="4", minute="7"))
@in_app_context
def purge_trash_task() -> int:
    """Every night: leads past their workspace's days in the trash are purged."""
    from crm.leads.trash import purge_expired_trash

    return purge_expired_trash()


@huey.task(retries=3, retry_delay=10)
@in_app_context
def import_leads_task(workspace_id: int, import_id: int) -> str:
    from crm.leads.import_run import run_import

    return run_import(workspace_id, import_id)


@huey.periodic_task(crontab(minute="*"))
@in_app_context
def reconcile_imports_task() -> dict[str, int]:
    """Every minute: imports whose task the queue lost, or whose run died, are queued again."""
    from crm.leads.import_run import reconcile_imports

    return reconcile_imports()
