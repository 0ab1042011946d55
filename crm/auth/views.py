"""Login, logout, first-run setup, invitations, workspace switching and the person's own account."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import abort, flash, g, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from crm.auth import bp, services, team
from crm.auth.forms import AcceptInvitationForm, LanguageForm, LoginForm, PasswordChangeForm, SetupForm
from crm.errors import DomainError, TooManyRequests
from crm.params import parse_id


def _client_ip() -> str | None:
    return request.remote_addr


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths: never an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("inbox.index")


def _sign_in(user_id: int, workspace_id: int) -> None:
    from crm.auth.models import User
    from crm.extensions import db

    user = db.session.get(User, user_id)
    assert user is not None
    token = services.start_session(user, workspace_id, _client_ip(), request.user_agent.string)
    # A brand-new cookie at login: the old one (and its CSRF secret) is discarded.
    session.clear()
    session["sid"] = token


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if not services.has_any_user():
        return redirect(url_for("auth.setup"))
    if current_user.is_authenticated:
        return redirect(url_for("inbox.index"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        try:
            user, membership = services.authenticate(
                form.email.data or "", form.password.data or "", _client_ip()
            )
        except TooManyRequests as exc:
            form.form_errors.append(exc.message)
            status = 429
        except DomainError as exc:
            form.form_errors.append(exc.message)
            status = exc.status
        else:
            _sign_in(user.id, membership.workspace_id)
            return redirect(_safe_next(request.args.get("next")))
    elif request.method == "POST":
        status = 400
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
def logout() -> Response:
    user_session = g.get("user_session") if current_user.is_authenticated else None
    if user_session is not None:
        services.end_session(user_session.id)
    session.clear()
    flash(_("You are signed out."), "info")
    return redirect(url_for("auth.login"))


@bp.route("/setup", methods=["GET", "POST"])
def setup() -> Any:
    """First run: the first person creates the workspace and becomes its owner."""
    if services.has_any_user():
        abort(404)
    form = SetupForm()
    if form.validate_on_submit():
        try:
            created = services.create_admin(
                form.workspace.data or "",
                form.email.data or "",
                form.password.data or "",
                country=form.country.data or "BR",
                timezone=form.timezone.data or "America/Sao_Paulo",
                name=form.name.data or "",
            )
        except DomainError as exc:
            form.form_errors.append(exc.message)
        else:
            _sign_in(created.user_id, created.workspace_id)
            flash(_("Welcome! Your workspace is ready."), "success")
            return redirect(url_for("inbox.index"))
    return render_template("auth/setup.html", form=form), 400 if form.errors else 200


@bp.route("/invite/<token>", methods=["GET", "POST"])
def accept_invitation(token: str) -> Any:
    invitation = team.find_open_invitation(token)
    form = AcceptInvitationForm()
    if form.validate_on_submit():
        try:
            user, membership = team.accept_invitation(
                token, name=form.name.data or "", password=form.password.data or ""
            )
        except DomainError as exc:
            form.form_errors.append(exc.message)
        else:
            _sign_in(user.id, membership.workspace_id)
            flash(_("You joined %(workspace)s.", workspace=invitation.workspace.name), "success")
            return redirect(url_for("inbox.index"))
    return render_template(
        "auth/accept_invitation.html",
        form=form,
        invitation=invitation,
        existing_user=team.user_exists(invitation.email),
    ), 400 if form.errors else 200


@bp.post("/workspaces/switch")
@login_required
def switch_workspace() -> Response:
    workspace_id = parse_id(request.form.get("workspace_id"))
    if workspace_id is None:
        abort(404)
    services.switch_workspace(g.user_session, workspace_id)
    return redirect(url_for("inbox.index"))


@bp.route("/account", methods=["GET", "POST"])
@login_required
def account() -> Any:
    password_form = PasswordChangeForm(prefix="pw")
    language_form = LanguageForm(prefix="lang", locale=current_user.locale or "")
    status = 200
    if request.method == "POST" and "pw-current" in request.form:
        if password_form.validate_on_submit():
            try:
                services.change_password(
                    current_user,
                    password_form.current.data or "",
                    password_form.new.data or "",
                    g.user_session.id,
                )
            except DomainError as exc:
                password_form.form_errors.append(exc.message)
                status = 400
            else:
                flash(_("Password changed. Your other sessions were signed out."), "success")
                return redirect(url_for("auth.account"))
        else:
            status = 400
    elif request.method == "POST":
        if language_form.validate_on_submit():
            services.set_locale(current_user, language_form.locale.data or None)
            return redirect(url_for("auth.account"))
        status = 400
    return render_template(
        "auth/account.html",
        password_form=password_form,
        language_form=language_form,
        sessions=services.user_sessions(current_user.id),
    ), status


@bp.post("/account/sessions/<int:session_id>/revoke")
@login_required
def revoke_session(session_id: int) -> Response:
    services.revoke_own_session(current_user.id, session_id)
    return redirect(url_for("auth.account"))
