"""Settings → Archive: the nightly archiving of old conversations, and the runs so far."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _

from crm.archiving.schedule import (
    MAX_SCHEDULE_DAYS,
    MIN_SCHEDULE_DAYS,
    recent_archives,
    update_archive_settings,
)
from crm.auth.decorators import manager_required
from crm.errors import DomainError
from crm.settings import bp, services
from crm.settings.forms import ArchiveSettingsForm
from crm.tenancy import current_workspace_id

DEFAULT_DAYS = 365


@bp.route("/archive", methods=["GET", "POST"])
@manager_required
def archive_page() -> Any:
    """Owners and admins only: archiving takes conversations out of everyone's inbox."""
    workspace_id = current_workspace_id()
    workspace = services.get_workspace(workspace_id)
    days = workspace.archive_after_days
    form = ArchiveSettingsForm(
        data={"enabled": days is not None, "days": days or DEFAULT_DAYS} if request.method == "GET" else None
    )
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                update_archive_settings(
                    workspace_id, g.membership, enabled=bool(form.enabled.data), days=form.days.data
                )
            except DomainError as exc:
                form.form_errors.append(exc.message)
                status = exc.status
            else:
                flash(_("Settings saved."), "success")
                return redirect(url_for("settings.archive_page"))
        else:
            status = 400
    return render_template(
        "settings/archive.html",
        form=form,
        workspace=workspace,
        archives=recent_archives(workspace_id),
        min_days=MIN_SCHEDULE_DAYS,
        max_days=MAX_SCHEDULE_DAYS,
    ), status
