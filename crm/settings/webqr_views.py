"""Settings → a WebQR number: connect by QR or code, disconnect, log out, pacing, groups."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required
from werkzeug.wrappers import Response

from crm.auth.decorators import manager_required
from crm.errors import DomainError
from crm.params import parse_id
from crm.settings import bp
from crm.tenancy import current_workspace_id
from crm.whatsapp import webqr


def _back(account_id: int) -> Response:
    return redirect(url_for("settings.number", account_id=account_id))


@bp.post("/numbers/<int:account_id>/webqr/connect")
@manager_required
def webqr_connect(account_id: int) -> Response:
    phone = (request.form.get("pair_phone") or "").strip() or None
    webqr.request_connect(current_workspace_id(), account_id, pair_phone=phone)
    return _back(account_id)


@bp.post("/numbers/<int:account_id>/webqr/disconnect")
@manager_required
def webqr_disconnect(account_id: int) -> Response:
    webqr.request_disconnect(current_workspace_id(), account_id, logout=request.form.get("logout") == "1")
    return _back(account_id)


@bp.post("/numbers/<int:account_id>/resume")
@manager_required
def resume_number(account_id: int) -> Response:
    webqr.resume_sending(current_workspace_id(), account_id)
    flash(_("Sending resumed."), "success")
    return _back(account_id)


@bp.post("/numbers/<int:account_id>/pacing")
@manager_required
def save_pacing(account_id: int) -> Response:
    webqr.webqr_account(current_workspace_id(), account_id)  # 404 for another workspace's number first
    form = request.form
    try:
        values = {
            "per_minute": int(form.get("per_minute", "")),
            "jitter_min": float(form.get("jitter_min", "")),
            "jitter_max": float(form.get("jitter_max", "")),
            "daily_cap": int(form.get("daily_cap", "")),
            "warmup_days": int(form.get("warmup_days", "")),
            "warmup_start": int(form.get("warmup_start", "")),
            "quiet_hours": form.get("quiet_hours") == "y",
            "quiet_start": form.get("quiet_start", ""),
            "quiet_end": form.get("quiet_end", ""),
        }
    except ValueError:
        raise DomainError(
            _("Check the pacing values: each must be within its range."), code="invalid_pacing", status=422
        ) from None
    webqr.save_pacing(current_workspace_id(), account_id, values)
    flash(_("Pacing saved."), "success")
    return _back(account_id)


@bp.post("/numbers/<int:account_id>/groups/sync")
@manager_required
def sync_groups(account_id: int) -> Response:
    webqr.request_group_sync(current_workspace_id(), account_id)
    flash(_("The groups will be refreshed in a few seconds."), "info")
    return _back(account_id)


@bp.get("/groups")
@login_required
def groups_page() -> str:
    from crm.whatsapp.accounts import list_accounts

    workspace_id = current_workspace_id()
    numbers = {a.id: a for a in list_accounts(workspace_id) if a.provider == "webqr"}
    account_id = parse_id(request.args.get("account_id"))
    if account_id not in numbers:
        account_id = None
    return render_template(
        "settings/groups.html",
        groups=webqr.list_groups(workspace_id, account_id),
        numbers=numbers,
        account_id=account_id,
    )
