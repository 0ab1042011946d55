"""Media tasks: ids in, one service call, a fresh app context each."""

from __future__ import annotations

from huey import crontab

from crm.worker import huey, in_app_context


@huey.task()
@in_app_context
def prepare_media_task(media_id: int) -> str:
    from crm.media.outbound import prepare_outbound

    return prepare_outbound(media_id)


@huey.task()
@in_app_context
def download_media_task(media_id: int) -> str:
    from crm.media.inbound import download_from_cloud

    return download_from_cloud(media_id)


@huey.periodic_task(crontab(minute="*/5"))
@in_app_context
def reconcile_media_task() -> dict[str, int]:
    from crm.media.cleanup import reconcile_media

    return reconcile_media()


@huey.periodic_task(crontab(hour="3", minute="23"))
@in_app_context
def sweep_media_orphans_task() -> dict[str, int]:
    from crm.media.cleanup import sweep_orphans

    return sweep_orphans()
