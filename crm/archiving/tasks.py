"""The nightly archive run (see ``crm.archiving.schedule``)."""

from __future__ import annotations

from typing import Any

from huey import crontab

from crm.worker import huey, in_app_context


@huey.periodic_task(crontab(hour="3", minute="47"))
@in_app_context
def archive_on_schedule_task() -> dict[str, Any]:
    """Every night: workspaces with archiving on archive their conversations with no recent
    message; runs left unfinished are finished; files nothing is archived in any more go."""
    from crm.archiving.schedule import run_scheduled_archives

    return run_scheduled_archives()
