"""WebQR numbers: what people ask for (connect, new QR, pair by code, disconnect, log out) and
what the gateway reports back (QR codes, pairing, connection state, bans, groups).

The web process only writes wishes into ``webqr_sessions``; the gateway, the single owner of
WhatsApp Web sessions, acts on them. Every report is published to open pages after its commit.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import segno
from flask_babel import gettext as _
from sqlalchemy import delete, select, update

from crm.db import insert_ignoring_conflicts, utcnow
from crm.errors import ValidationFailed
from crm.extensions import db
from crm.leads.models import Lead
from crm.leads.phones import to_e164
from crm.leads.services import workspace_country
from crm.realtime.broker import publish_after_commit
from crm.tenancy import get_scoped
from crm.whatsapp.health import mark_health
from crm.whatsapp.models import Health, WebQRSession, WebQRState, WhatsAppAccount, WhatsAppGroup

log = logging.getLogger(__name__)

FIRST_QR_SECONDS = 60  # WhatsApp's first code lives about a minute, the next ones about 20 s
NEXT_QR_SECONDS = 20
MAX_QR_CODES = 6  # about 160 s in all, then we stop and offer a new QR instead of looping


def webqr_account(workspace_id: int, account_id: int) -> WhatsAppAccount:
    account = get_scoped(WhatsAppAccount, workspace_id, account_id)
    if account.provider != "webqr":
        raise ValidationFailed(_("This is not a WhatsApp Web number."), code="not_webqr")
    return account


def session_row(account: WhatsAppAccount) -> WebQRSession:
    """The control row of a WebQR number, created on first use (no commit)."""
    db.session.execute(
        insert_ignoring_conflicts(WebQRSession).values(
            account_id=account.id,
            workspace_id=account.workspace_id,
            desired="stopped",
            state=WebQRState.IDLE.value,
            generation=0,
            qr_count=0,
            updated_at=utcnow(),
        )
    )
    row = db.session.get(WebQRSession, account.id)
    assert row is not None
    return row


def _announce(row: WebQRSession) -> None:
    publish_after_commit(
        row.workspace_id, {"type": "webqr.state", "account_id": row.account_id, "state": row.state}
    )


# --- wishes, from people (web process) ---------------------------------------------------------


def request_connect(workspace_id: int, account_id: int, pair_phone: str | None = None) -> WebQRSession:
    """Start (or restart) pairing: a fresh QR, or an 8-character code for ``pair_phone``."""
    account = webqr_account(workspace_id, account_id)
    row = session_row(account)
    row.desired = "running"
    row.generation += 1  # the gateway restarts the session for a new series of codes
    row.pair_phone = to_e164(pair_phone, workspace_country(workspace_id)).lstrip("+") if pair_phone else None
    row.state, row.state_detail = WebQRState.STARTING.value, None
    row.qr_code, row.qr_expires_at, row.qr_count, row.pair_code = None, None, 0, None
    account.status = "active"
    _announce(row)
    db.session.commit()
    return row


def request_disconnect(workspace_id: int, account_id: int, *, logout: bool) -> WebQRSession:
    """Stop the session; ``logout`` also unlinks the device from the phone (a new scan is needed)."""
    account = webqr_account(workspace_id, account_id)
    row = session_row(account)
    row.desired = "logout" if logout else "stopped"
    _announce(row)
    db.session.commit()
    return row


def pairing_view(workspace_id: int, account_id: int) -> dict[str, Any]:
    """Everything the pairing panel shows, QR rendered as SVG."""
    account = webqr_account(workspace_id, account_id)
    row = db.session.get(WebQRSession, account.id)
    qr_svg = None
    if row is not None and row.qr_code and row.state == WebQRState.WAITING_FOR_SCAN.value:
        qr_svg = segno.make(row.qr_code, error="l").svg_inline(scale=5, border=2, dark="#111827")
    return {"account": account, "session": row, "qr_svg": qr_svg}


# --- reports, from the gateway ---------------------------------------------------------------------


def _row(account_id: int) -> tuple[WhatsAppAccount, WebQRSession]:
    account = db.session.get(WhatsAppAccount, account_id)
    if account is None:
        raise LookupError(f"account {account_id}")
    return account, session_row(account)


def _set_state(row: WebQRSession, state: WebQRState, detail: str | None = None) -> None:
    row.state, row.state_detail = state.value, detail
    row.heartbeat_at = utcnow()
    _announce(row)


def report_qr(account_id: int, code: str) -> bool:
    """A new QR code to show. False once the series has run out (the session should stop)."""
    account, row = _row(account_id)
    if row.qr_count >= MAX_QR_CODES:
        _set_state(row, WebQRState.QR_EXPIRED, _("The QR codes ran out. Ask for a new QR to try again."))
        row.qr_code = None
        mark_health(account, None, "qr_expired", "QR codes expired without a scan")
        db.session.commit()
        return False
    now = utcnow()
    row.qr_code = code
    row.qr_expires_at = now + timedelta(seconds=FIRST_QR_SECONDS if row.qr_count == 0 else NEXT_QR_SECONDS)
    row.qr_count += 1
    _set_state(row, WebQRState.WAITING_FOR_SCAN)
    db.session.commit()
    return True


def report_pair_code(account_id: int, code: str) -> None:
    _account, row = _row(account_id)
    row.pair_code = code
    _set_state(
        row,
        WebQRState.WAITING_FOR_SCAN,
        _("Type this code on the phone: Linked devices → Link with phone number."),
    )
    db.session.commit()


def report_paired(account_id: int, jid_user: str) -> None:
    account, row = _row(account_id)
    row.jid, row.paired_at = jid_user, utcnow()
    row.qr_code, row.pair_code, row.pair_phone = None, None, None
    account.phone = "+" + jid_user if jid_user.isdigit() else account.phone
    _set_state(row, WebQRState.PAIRED)
    mark_health(account, None, "paired", f"paired as {account.phone or jid_user}")
    db.session.commit()


def report_connected(account_id: int) -> None:
    account, row = _row(account_id)
    row.last_seen_at = utcnow()
    row.qr_code = None
    _set_state(row, WebQRState.CONNECTED)
    if account.health != Health.BLOCKED.value or (account.paused_until and account.paused_until < utcnow()):
        mark_health(account, Health.CONNECTED.value, "connected")
    db.session.commit()


def report_disconnected(account_id: int, detail: str = "") -> None:
    _account, row = _row(account_id)
    if row.state not in (WebQRState.LOGGED_OUT.value, WebQRState.BANNED.value, WebQRState.QR_EXPIRED.value):
        _set_state(row, WebQRState.DISCONNECTED, detail or None)
    db.session.commit()


def report_logged_out(account_id: int, reason: str, *, on_connect: bool) -> None:
    """The phone removed this device (or WhatsApp did): sending stops until a new scan."""
    account, row = _row(account_id)
    row.desired = "stopped"
    row.jid = None
    _set_state(row, WebQRState.LOGGED_OUT, reason)
    kind = "logged_out_on_connect" if on_connect else "logged_out"
    mark_health(
        account,
        Health.LOGGED_OUT.value,
        kind,
        _("WhatsApp ended this session (%(reason)s). Scan a new QR code to reconnect.", reason=reason),
    )
    db.session.commit()


def report_temporary_ban(account_id: int, code: int, expires_in: timedelta) -> None:
    """WhatsApp banned the number for a while: stop every send from it until a person resumes."""
    account, row = _row(account_id)
    until = utcnow() + expires_in
    account.paused_until = until
    _set_state(row, WebQRState.BANNED, f"code {code}")
    mark_health(
        account,
        Health.BLOCKED.value,
        "temporary_ban",
        _(
            "WhatsApp temporarily banned this number (code %(code)s) until %(until)s. Sending is paused; "
            "slow down before resuming.",
            code=code,
            until=until.strftime("%Y-%m-%d %H:%M UTC"),
        ),
    )
    db.session.commit()


def report_warning(account_id: int, kind: str, detail: str = "", health: str | None = None) -> None:
    """Stream replaced, connect failure, client outdated, keep-alive timeouts…: into the history."""
    account, row = _row(account_id)
    row.heartbeat_at = utcnow()
    mark_health(account, health, kind, detail)
    db.session.commit()


def heartbeat(account_id: int, owner: str) -> None:
    _account, row = _row(account_id)
    row.heartbeat_at = utcnow()
    row.owner = owner
    if row.state == WebQRState.CONNECTED.value:
        row.last_seen_at = row.heartbeat_at
    db.session.commit()


def sync_groups(account_id: int, groups: list[tuple[str, str, int, bool]]) -> int:
    """Replace the number's group list with what WhatsApp says: (jid, name, participants, admin)."""
    account, _session = _row(account_id)
    seen = set()
    now = utcnow()
    for jid, name, participants, is_admin in groups:
        seen.add(jid)
        existing = db.session.scalar(
            select(WhatsAppGroup).where(WhatsAppGroup.account_id == account.id, WhatsAppGroup.jid == jid)
        )
        if existing is None:
            db.session.add(
                WhatsAppGroup(
                    workspace_id=account.workspace_id,
                    account_id=account.id,
                    jid=jid,
                    name=name[:200],
                    participants=participants,
                    is_admin=is_admin,
                    synced_at=now,
                )
            )
        else:
            existing.name, existing.participants, existing.is_admin, existing.synced_at = (
                name[:200],
                participants,
                is_admin,
                now,
            )
    # The group chats' conversations show the groups' current names.
    for jid, name, _participants, _admin in groups:
        db.session.execute(
            update(Lead)
            .where(Lead.workspace_id == account.workspace_id, Lead.bsuid == jid, Lead.kind == "group")
            .values(name=name[:200])
        )
    stale = delete(WhatsAppGroup).where(WhatsAppGroup.account_id == account.id)
    if seen:
        stale = stale.where(WhatsAppGroup.jid.not_in(seen))
    db.session.execute(stale)
    publish_after_commit(account.workspace_id, {"type": "webqr.groups", "account_id": account.id})
    db.session.commit()
    return len(seen)


def list_groups(workspace_id: int, account_id: int | None = None) -> list[WhatsAppGroup]:
    stmt = select(WhatsAppGroup).where(WhatsAppGroup.workspace_id == workspace_id)
    if account_id is not None:
        get_scoped(WhatsAppAccount, workspace_id, account_id)
        stmt = stmt.where(WhatsAppGroup.account_id == account_id)
    return list(db.session.scalars(stmt.order_by(WhatsAppGroup.name, WhatsAppGroup.id)))


def group_json(group: WhatsAppGroup) -> dict[str, Any]:
    return {
        "id": group.id,
        "jid": group.jid,
        "name": group.name,
        "participants": group.participants,
        "account_id": group.account_id,
        "is_admin": group.is_admin,
    }


def seconds_left(expires_at: datetime | None) -> int:
    return max(0, int((expires_at - utcnow()).total_seconds())) if expires_at else 0


def resume_sending(workspace_id: int, account_id: int) -> WhatsAppAccount:
    """A person looked at why the number was paused and resumes it by hand."""
    account = get_scoped(WhatsAppAccount, workspace_id, account_id)
    account.paused_until = None
    row = db.session.get(WebQRSession, account.id)
    connected = account.provider != "webqr" or (row is not None and row.state == WebQRState.CONNECTED.value)
    if account.health in (Health.BLOCKED.value, Health.DEGRADED.value) and connected:
        mark_health(account, Health.CONNECTED.value, "resumed_by_hand")
    else:
        mark_health(account, None, "resumed_by_hand")
    settings = dict(account.settings or {})
    settings.pop("consecutive_failures", None)
    account.settings = settings
    db.session.commit()
    return account


def save_pacing(workspace_id: int, account_id: int, values: dict[str, Any]) -> WhatsAppAccount:
    """Per-number ban-risk settings, validated as a whole before saving."""
    from crm.whatsapp.webqr_pacing import WebQRPacing, _parse

    account = webqr_account(workspace_id, account_id)
    try:
        pacing = WebQRPacing(**values)
        _parse(pacing.quiet_start), _parse(pacing.quiet_end)
        problems = [
            not 1 <= pacing.per_minute <= 60,
            not 0 <= pacing.jitter_min <= pacing.jitter_max <= 600,
            not 1 <= pacing.daily_cap <= 100_000,
            not 0 <= pacing.warmup_days <= 90,
            not 1 <= pacing.warmup_start <= pacing.daily_cap,
        ]
    except (TypeError, ValueError):
        problems = [True]
    if any(problems):
        raise ValidationFailed(
            _("Check the pacing values: each must be within its range."), code="invalid_pacing"
        )
    account.settings = {**(account.settings or {}), "pacing": pacing.as_dict()}
    db.session.commit()
    return account


def request_group_sync(workspace_id: int, account_id: int) -> None:
    account = webqr_account(workspace_id, account_id)
    account.settings = {**(account.settings or {}), "groups_sync_requested": utcnow().isoformat()}
    db.session.commit()


def take_group_sync_request(account_id: int) -> bool:
    account = db.session.get(WhatsAppAccount, account_id)
    if account is None or not (account.settings or {}).get("groups_sync_requested"):
        return False
    settings = dict(account.settings)
    settings.pop("groups_sync_requested", None)
    account.settings = settings
    db.session.commit()
    return True


def note_send_failure(account: WhatsAppAccount, failures_before_pause: int = 3) -> None:
    """Repeated send failures on a WebQR number look like a block: pause it for a person to check."""
    settings = dict(account.settings or {})
    count = int(settings.get("consecutive_failures", 0)) + 1
    settings["consecutive_failures"] = count
    account.settings = settings
    if count >= failures_before_pause:
        account.paused_until = utcnow() + timedelta(hours=12)
        mark_health(
            account,
            Health.DEGRADED.value,
            "paused_after_failures",
            _(
                "%(n)d sends failed in a row: sending from this number is paused. Check the phone, then "
                "resume by hand.",
                n=count,
            ),
        )


def note_send_success(account: WhatsAppAccount) -> None:
    if (account.settings or {}).get("consecutive_failures"):
        settings = dict(account.settings)
        settings.pop("consecutive_failures", None)
        account.settings = settings
