"""The AI queue's tasks, and the main queue's housekeeping for them."""

from __future__ import annotations

from huey import crontab

from crm.worker import ai_huey, huey, in_app_context


@ai_huey.task()
@in_app_context
def answer_task(reply_id: int) -> str:
    from crm.ai.replies import answer

    return answer(reply_id)


@ai_huey.task()
@in_app_context
def suggest_task(suggestion_id: int) -> str:
    from crm.ai.suggest import write_suggestion

    return write_suggestion(suggestion_id)


@huey.periodic_task(crontab(minute="*"))
@in_app_context
def reconcile_ai_replies() -> int:
    """Every minute: answers owed whose job the queue lost are queued again."""
    from datetime import timedelta

    from crm.ai.replies import reconcile

    return reconcile(stale_after=timedelta(minutes=2))


@huey.periodic_task(crontab(minute="41", hour="*/6"))
@in_app_context
def purge_ai_rows() -> dict[str, int]:
    from crm.ai.replies import purge

    return purge()
