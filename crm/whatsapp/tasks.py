"""Queue tasks for messaging: ids in, one service call, a fresh app context each."""

from __future__ import annotations

import logging

from huey import crontab

from crm.extensions import db
from crm.worker import huey, in_app_context

log = logging.getLogger(__name__)


@huey.task()
@in_app_context
def deliver_task(outbox_id: int) -> str:
    from crm.whatsapp.outbox import SLOT_WAIT_IN_TASK, deliver_outbound

    # Inline (tests), a task never sleeps: the tests move the clock themselves.
    return deliver_outbound(outbox_id, wait_for_slot=0.0 if huey.immediate else SLOT_WAIT_IN_TASK)


@huey.periodic_task(crontab(minute="*"))
@in_app_context
def reconcile_outbox_task() -> dict[str, int]:
    from crm.whatsapp.outbox import reconcile_outbox

    return reconcile_outbox()


@huey.task()
@in_app_context
def auto_assign_task(workspace_id: int, conversation_id: int) -> int | None:
    from crm.inbox.assignment import auto_assign

    return auto_assign(workspace_id, conversation_id)


@huey.periodic_task(crontab(minute="41"))
@in_app_context
def sync_templates_task() -> dict[int, int]:
    """Every hour: each Cloud API number's templates (approvals and new ones show up)."""
    from crm.whatsapp.templates import sync_all_templates

    return sync_all_templates()


@huey.task()
@in_app_context
def sync_account_templates_task(account_id: int) -> int | None:
    """One number's templates, asked for from its settings page."""
    from crm.whatsapp.models import WhatsAppAccount
    from crm.whatsapp.providers.base import ProviderError
    from crm.whatsapp.templates import sync_templates

    account = db.session.get(WhatsAppAccount, account_id)
    if account is None:
        return None
    try:
        return sync_templates(account)
    except ProviderError as exc:
        log.warning("account %s: templates not synced: %s", account_id, exc)
        return None
