"""Settings → AI replies: the status box, the settings form and the per-number switches."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import login_required

from crm.ai.settings import MAX_KNOWLEDGE_CHARS, default_texts
from crm.auth.decorators import manager_required
from crm.errors import DomainError
from crm.settings import ai, bp, services
from crm.settings.forms import AISettingsForm
from crm.tenancy import current_workspace_id


def _page(form: AISettingsForm, status: int = 200) -> Any:
    workspace_id = current_workspace_id()
    workspace = services.get_workspace(workspace_id)
    manager = g.membership.role_enum.manages_team
    return render_template(
        "settings/ai.html",
        form=form,
        workspace=workspace,
        # Agents see what the bot does, not the key, the errors or the bill.
        ai_status=ai.ai_status(workspace_id, workspace.timezone if manager else None),
        numbers=ai.numbers(workspace_id),
        defaults=default_texts(workspace),
        max_knowledge=MAX_KNOWLEDGE_CHARS,
        knowledge_room=ai.knowledge_room_chars(workspace_id),
    ), status


@bp.get("/ai")
@login_required
def ai_page() -> Any:
    """Everyone sees what the bot does; owners and admins change it."""
    workspace_id = current_workspace_id()
    numbers = [n.id for n in ai.numbers(workspace_id)]
    return _page(AISettingsForm(data=ai.form_values(workspace_id), number_ids=numbers))


@bp.post("/ai")
@manager_required
def save_ai() -> Any:
    workspace_id = current_workspace_id()
    form = AISettingsForm(number_ids=[n.id for n in ai.numbers(workspace_id)])
    if not form.validate_on_submit():
        if form.uploaded_knowledge is not None:
            form.knowledge.data = form.uploaded_knowledge  # shown, so the upload is not lost
        return _page(form, 400)
    try:
        ai.save_page(
            workspace_id,
            g.membership,
            form.values(),
            new_key=(form.api_key.data or "").strip() or None,
            remove_key=bool(form.remove_key.data),
            ai_numbers=set(form.ai_numbers.data or []),
        )
    except DomainError as exc:
        form.form_errors.append(exc.message)
        return _page(form, exc.status)
    if form.uploaded_knowledge is not None:
        flash(_("Settings saved. The knowledge now holds the uploaded file's text."), "success")
    else:
        flash(_("Settings saved."), "success")
    return redirect(url_for("settings.ai_page"))
