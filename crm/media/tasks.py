"""Media tasks: ids in, one service call, a fresh app context each."""

from __future__ import annotations

from huey import crontab

from crm.worker import huey, in_app_context


@huey.task()
@in_app_context
def prepare_media_task(media_id: int) -> str:
    from crm.media.services import prepare_outbound

    return prepare_outbound(media_id)


@huey.task()
@in_app_context
def download_media_task(media_id: int) -> str:
    from crm.extensions import db
    from crm.media.models import MediaFile
    from crm.media.services import download_inbound, fetch_for

    media = db.session.get(MediaFile, media_id)
    if media is None:
        return "gone"
    return download_inbound(media_id, fetch_for(media), retrying=False)


@huey.periodic_task(crontab(minute="*/5"))
@in_app_context
def reconcile_media_task() -> dict[str, int]:
    from crm.media.services import reconcile_media

    return reconcile_media()


@huey.periodic_task(crontab(hour="3", minute="23"))
@in_app_context
def sweep_media_orphans_task() -> dict[str, int]:
    from crm.media.services import sweep_orphans

    return sweep_orphans()
