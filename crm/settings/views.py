"""Settings: the workspace, its team (members, roles, invitations) and API tokens."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import login_required
from werkzeug.wrappers import Response

from crm.auth import team
from crm.auth.decorators import manager_required
from crm.errors import DomainError
from crm.settings import bp, services
from crm.settings.forms import ConsentForm, InviteForm, RoleForm, TokenForm, WorkspaceForm
from crm.tenancy import current_workspace_id


@bp.route("/", methods=["GET", "POST"])
@login_required
def general() -> Any:
    workspace = services.get_workspace(current_workspace_id())
    form = WorkspaceForm(obj=workspace)
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                services.update_workspace(
                    current_workspace_id(),
                    g.membership,
                    name=form.name.data or "",
                    country=form.country.data or "",
                    timezone=form.timezone.data or "",
                    locale=form.locale.data or "",
                    auto_assign=bool(form.auto_assign.data),
                )
            except DomainError as exc:
                form.form_errors.append(exc.message)
                status = exc.status
            else:
                flash(_("Settings saved."), "success")
                return redirect(url_for("settings.general"))
        else:
            status = 400
    return render_template("settings/general.html", form=form, workspace=workspace), status


@bp.route("/consent", methods=["GET", "POST"])
@login_required
def consent() -> Any:
    """Consent keywords and replies, and the leads' trash."""
    from crm.leads.consent import default_confirmation, opt_in_keywords, opt_out_keywords

    workspace = services.get_workspace(current_workspace_id())
    form = ConsentForm(
        data={
            "opt_out_keywords": ", ".join(opt_out_keywords(workspace)),
            "opt_in_keywords": ", ".join(opt_in_keywords(workspace)),
            "opt_out_reply": workspace.opt_out_reply or "",
            "opt_in_reply": workspace.opt_in_reply or "",
            "trash_days": workspace.trash_days,
        }
        if request.method == "GET"
        else None
    )
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                services.update_consent_settings(
                    current_workspace_id(),
                    g.membership,
                    opt_out_keywords=form.opt_out_keywords.data or "",
                    opt_in_keywords=form.opt_in_keywords.data or "",
                    opt_out_reply=form.opt_out_reply.data or "",
                    opt_in_reply=form.opt_in_reply.data or "",
                    trash_days=form.trash_days.data or 0,
                )
            except DomainError as exc:
                form.form_errors.append(exc.message)
                status = exc.status
            else:
                flash(_("Settings saved."), "success")
                return redirect(url_for("settings.consent"))
        else:
            status = 400
    defaults = {
        "opt_out": default_confirmation(workspace, False),
        "opt_in": default_confirmation(workspace, True),
    }
    return render_template("settings/consent.html", form=form, workspace=workspace, defaults=defaults), status


def _team_page(invite_form: InviteForm | None = None, new_link: str | None = None, status: int = 200) -> Any:
    workspace_id = current_workspace_id()
    return render_template(
        "settings/team.html",
        members=team.list_members(workspace_id),
        invitations=team.pending_invitations(workspace_id),
        invite_form=invite_form or InviteForm(),
        role_form=RoleForm(),
        new_link=new_link,
    ), status


@bp.get("/team")
@manager_required
def team_page() -> Any:
    return _team_page()


@bp.post("/team/invitations")
@manager_required
def invite() -> Any:
    form = InviteForm()
    if not form.validate_on_submit():
        return _team_page(form, status=400)
    try:
        created = team.create_invitation(
            current_workspace_id(), g.membership, form.email.data or "", form.role.data or "agent"
        )
    except DomainError as exc:
        form.form_errors.append(exc.message)
        return _team_page(form, status=exc.status)
    link = url_for("auth.accept_invitation", token=created.token, _external=True)
    return _team_page(new_link=link)


@bp.post("/team/invitations/<int:invitation_id>/revoke")
@manager_required
def revoke_invitation(invitation_id: int) -> Response:
    team.revoke_invitation(current_workspace_id(), g.membership, invitation_id)
    flash(_("Invitation revoked."), "info")
    return redirect(url_for("settings.team_page"))


@bp.post("/team/members/<int:member_id>/role")
@manager_required
def change_role(member_id: int) -> Response:
    services.get_membership(current_workspace_id(), member_id)  # 404 before validating the form
    form = RoleForm()
    if not form.validate_on_submit():
        raise DomainError(_("Choose a role."), code="invalid_role", status=400)
    team.change_role(current_workspace_id(), g.membership, member_id, form.role.data or "")
    flash(_("Role changed."), "success")
    return redirect(url_for("settings.team_page"))


@bp.post("/team/members/<int:member_id>/disable")
@manager_required
def disable_member(member_id: int) -> Response:
    team.set_member_disabled(current_workspace_id(), g.membership, member_id, True)
    flash(_("Access disabled and sessions ended."), "info")
    return redirect(url_for("settings.team_page"))


@bp.post("/team/members/<int:member_id>/enable")
@manager_required
def enable_member(member_id: int) -> Response:
    team.set_member_disabled(current_workspace_id(), g.membership, member_id, False)
    flash(_("Access restored."), "success")
    return redirect(url_for("settings.team_page"))


@bp.post("/team/members/<int:member_id>/sessions/end")
@manager_required
def end_member_sessions(member_id: int) -> Response:
    count = team.end_member_sessions(current_workspace_id(), g.membership, member_id)
    flash(ngettext("%(num)d session ended.", "%(num)d sessions ended.", count), "info")
    return redirect(url_for("settings.team_page"))


@bp.route("/tokens", methods=["GET", "POST"])
@manager_required
def tokens() -> Any:
    form = TokenForm()
    new_token = None
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            new_token = team.create_api_token(
                current_workspace_id(), g.membership.user_id, form.name.data or ""
            ).token
        else:
            status = 400
    return render_template(
        "settings/tokens.html",
        form=form,
        new_token=new_token,
        tokens=team.list_api_tokens(current_workspace_id()),
    ), status


@bp.post("/tokens/<int:token_id>/revoke")
@manager_required
def revoke_token(token_id: int) -> Response:
    team.revoke_api_token(current_workspace_id(), g.membership, token_id)
    flash(_("Token revoked."), "info")
    return redirect(url_for("settings.tokens"))


@bp.route("/replies", methods=["GET", "POST"])
@login_required
def canned_page() -> Any:
    from crm.inbox import canned

    workspace_id = current_workspace_id()
    errors: list[str] = []
    status = 200
    if request.method == "POST":
        try:
            created = canned.create_canned(
                workspace_id, g.membership, request.form.get("shortcut"), request.form.get("text")
            )
        except DomainError as exc:
            errors.append(exc.message)
            status = exc.status
        else:
            flash(_("Saved: type /%(shortcut)s in a reply to use it.", shortcut=created.shortcut), "success")
            return redirect(url_for("settings.canned_page"))
    return render_template(
        "settings/canned.html",
        replies=canned.list_canned(workspace_id),
        errors=errors,
        values=request.form if errors else {},
    ), status


@bp.post("/replies/<int:canned_id>/delete")
@manager_required
def delete_canned(canned_id: int) -> Response:
    from crm.inbox import canned

    canned.delete_canned(current_workspace_id(), g.membership, canned_id)
    flash(_("Reply deleted."), "info")
    return redirect(url_for("settings.canned_page"))


@bp.get("/system")
@manager_required
def system() -> Any:
    """The queue, Redis memory and sends waiting: what to look at when messages seem slow."""
    from crm.settings.system import system_status

    return render_template("settings/system.html", status=system_status(current_workspace_id()))
