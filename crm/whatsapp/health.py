"""A number's health, from provider signals and send errors, with its history."""

from __future__ import annotations

import logging
from datetime import timedelta

from crm.db import utcnow
from crm.extensions import db
from crm.realtime.broker import publish_after_commit
from crm.whatsapp.events import AccountSignal
from crm.whatsapp.models import AccountEvent, Health, WhatsAppAccount

log = logging.getLogger(__name__)


def mark_health(account: WhatsAppAccount, health: str | None, kind: str, detail: str = "") -> None:
    """Record an event and, when ``health`` is given, move the number to it (no commit)."""
    db.session.add(
        AccountEvent(
            workspace_id=account.workspace_id,
            account_id=account.id,
            kind=kind[:64],
            health=health,
            detail=detail[:2000],
        )
    )
    if health and health != account.health:
        log.warning("account %s health %s -> %s (%s)", account.id, account.health, health, kind)
        account.health = health
        account.health_reason = detail[:2000] or kind
        account.health_changed_at = utcnow()
        publish_after_commit(
            account.workspace_id, {"type": "account.health", "account_id": account.id, "health": health}
        )
    if health:
        _stop_broadcasts(account)


def _stop_broadcasts(account: WhatsAppAccount) -> None:
    """A number that was blocked, logged out or told to slow down for long pauses the broadcasts
    sending through it, with the reason on their page."""
    from crm.broadcasts.dispatch import stop_reason
    from crm.broadcasts.services import pause_for_account

    reason = stop_reason([account], utcnow())
    if reason:
        pause_for_account(account, reason)


def pause(account: WhatsAppAccount, seconds: float) -> None:
    until = utcnow() + timedelta(seconds=seconds)
    if account.paused_until is None or account.paused_until < until:
        account.paused_until = until


# Cloud API account-level webhooks and what they mean for sending.
_SIGNAL_HEALTH = {
    ("account_update", "ACCOUNT_RESTRICTION"): Health.DEGRADED,
    ("account_update", "ACCOUNT_VIOLATION"): Health.DEGRADED,
    ("account_update", "DISABLED_UPDATE"): Health.BLOCKED,
    ("account_update", "ACCOUNT_DELETED"): Health.BLOCKED,
    ("phone_number_quality_update", "FLAGGED"): Health.DEGRADED,
    ("phone_number_quality_update", "DOWNGRADE"): Health.DEGRADED,
    ("phone_number_quality_update", "UNFLAGGED"): Health.CONNECTED,
    ("phone_number_quality_update", "UPGRADE"): Health.CONNECTED,
}


def record_signal(account: WhatsAppAccount, signal: AccountSignal) -> None:
    health = _SIGNAL_HEALTH.get((signal.field, signal.event.upper()))
    if health is Health.CONNECTED and account.health_enum in (Health.LOGGED_OUT, Health.BLOCKED):
        health = None  # a quality upgrade doesn't undo a block or an expired token
    detail = str(signal.detail)[:2000]
    mark_health(account, health.value if health else None, f"{signal.field}:{signal.event}"[:64], detail)
