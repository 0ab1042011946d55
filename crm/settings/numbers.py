"""Settings → Numbers: add and edit WhatsApp numbers, see their health, use the sandbox simulator."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from werkzeug.wrappers import Response
from wtforms import (
    BooleanField,
    IntegerField,
    PasswordField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from crm.auth.decorators import manager_required
from crm.db import utcnow
from crm.errors import DomainError
from crm.htmx import render
from crm.leads.phones import for_humans
from crm.media.limits import LARGEST_UPLOAD
from crm.media.services import spooled
from crm.settings import bp
from crm.tenancy import current_workspace_id
from crm.whatsapp import accounts, simulator


class _CloudFields(FlaskForm):
    phone_number_id = StringField(_l("Phone number ID"), validators=[Length(max=64)])
    waba_id = StringField(_l("WhatsApp Business Account ID"), validators=[Length(max=64)])
    access_token = PasswordField(_l("Access token"), validators=[Length(max=1000)])
    app_secret = PasswordField(_l("App secret"), validators=[Length(max=200)])
    verify_token = PasswordField(_l("Webhook verify token"), validators=[Length(max=200)])
    graph_url = StringField(_l("Graph API URL (optional)"), validators=[Length(max=300)])

    def cloud_settings(self) -> accounts.CloudSettings:
        return accounts.CloudSettings(
            phone_number_id=self.phone_number_id.data or "",
            access_token=self.access_token.data or "",
            app_secret=self.app_secret.data or "",
            verify_token=self.verify_token.data or "",
            waba_id=self.waba_id.data or "",
            graph_url=self.graph_url.data or "",
        )


class NewNumberForm(_CloudFields):
    provider = SelectField(
        _l("Kind of number"),
        choices=[
            SelectChoice("sandbox", _l("Sandbox (simulated, for trying things out)")),
            SelectChoice("cloud", _l("WhatsApp Cloud API (official)")),
            SelectChoice("webqr", _l("WhatsApp Web (scan a QR code)")),
        ],
    )
    name = StringField(_l("Label"), validators=[DataRequired(), Length(max=120)])
    max_per_minute = IntegerField(
        _l("Max messages per minute (optional)"), validators=[Optional(), NumberRange(1, 100_000)]
    )


class EditNumberForm(_CloudFields):
    name = StringField(_l("Label"), validators=[DataRequired(), Length(max=120)])
    max_per_minute = IntegerField(
        _l("Max messages per minute (optional)"), validators=[Optional(), NumberRange(1, 100_000)]
    )
    active = BooleanField(_l("In use"))
    priority = IntegerField(_l("Priority (lower is preferred)"), default=0, validators=[NumberRange(0, 1000)])
    weight = IntegerField(
        _l("Share of new leads among equal priority (%)"), default=100, validators=[NumberRange(0, 100)]
    )
    fallback_account_id = SelectField(_l("Fallback number"), coerce=str)


class SimulatorForm(FlaskForm):
    phone = StringField(
        _l("Customer phone"), default="+55 11 99999-0000", validators=[DataRequired(), Length(max=40)]
    )
    name = StringField(_l("Customer name"), default="Cliente Teste", validators=[Length(max=120)])
    text = TextAreaField(_l("Message"), validators=[Length(max=4096)])
    file = FileField(_l("File (optional)"))

    def validate_text(self, field: Any) -> None:
        upload = self.file.data
        if not (field.data or "").strip() and not (upload and upload.filename):
            raise ValidationError(_("Write a message or choose a file."))


def _webhook_url(account: Any) -> str | None:
    path = accounts.webhook_path(account)
    return url_for("webhooks.receive_cloud", key=account.webhook_key, _external=True) if path else None


@bp.route("/numbers", methods=["GET", "POST"])
@manager_required
def numbers() -> Any:
    workspace_id = current_workspace_id()
    form = NewNumberForm()
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                account = accounts.create_account(
                    workspace_id,
                    provider=form.provider.data or "",
                    name=form.name.data or "",
                    max_per_minute=form.max_per_minute.data,
                    cloud=form.cloud_settings(),
                )
            except DomainError as exc:
                form.form_errors.append(exc.message)
                status = exc.status
            else:
                flash(_("Number added."), "success")
                return redirect(url_for("settings.number", account_id=account.id))
        else:
            status = 400
    return render_template(
        "settings/numbers.html",
        form=form,
        numbers=accounts.list_accounts(workspace_id),
        webhook_url=_webhook_url,
        for_humans=for_humans,
    ), status


@bp.route("/numbers/<int:account_id>", methods=["GET", "POST"])
@manager_required
def number(account_id: int) -> Any:
    workspace_id = current_workspace_id()
    account = accounts.get_account(workspace_id, account_id)
    form = EditNumberForm(obj=account if request.method == "GET" else None)
    if request.method == "GET":
        form.active.data = account.status == "active"
        form.phone_number_id.data = str(account.settings.get("phone_number_id", ""))
        form.waba_id.data = str(account.settings.get("waba_id", ""))
        form.graph_url.data = str(account.settings.get("graph_url", ""))
        form.fallback_account_id.data = str(account.fallback_account_id or "")
    others = [a for a in accounts.list_accounts(workspace_id) if a.id != account.id]
    form.fallback_account_id.choices = [
        SelectChoice("", _("None")),
        *[SelectChoice(str(a.id), a.name) for a in others],
    ]
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                accounts.update_account(
                    workspace_id,
                    account_id,
                    name=form.name.data or "",
                    max_per_minute=form.max_per_minute.data,
                    active=bool(form.active.data),
                    priority=form.priority.data or 0,
                    weight=form.weight.data if form.weight.data is not None else 100,
                    fallback_account_id=int(form.fallback_account_id.data)
                    if form.fallback_account_id.data
                    else None,
                    cloud=form.cloud_settings(),
                )
            except DomainError as exc:
                form.form_errors.append(exc.message)
                status = exc.status
            else:
                flash(_("Number saved."), "success")
                return redirect(url_for("settings.number", account_id=account_id))
        else:
            status = 400
    extra: dict[str, Any] = {}
    if account.provider == "webqr":
        from crm.whatsapp import webqr
        from crm.whatsapp.webqr_pacing import WebQRPacing

        view = webqr.pairing_view(workspace_id, account.id)
        extra = {
            "session": view["session"],
            "qr_svg": view["qr_svg"],
            "pacing": WebQRPacing.of(account),
            "groups": webqr.list_groups(workspace_id, account.id),
        }
    if account.provider == "cloud":
        from crm.whatsapp import templates

        extra = {
            "templates": templates.list_templates(workspace_id, account.id),
            "sendable": templates.sendable_from_inbox,
        }
    return render_template(
        "settings/number.html",
        form=form,
        account=account,
        events=accounts.health_history(workspace_id, account.id),
        webhook_url=_webhook_url(account),
        now_utc=utcnow(),
        **extra,
    ), status


@bp.route("/numbers/<int:account_id>/simulator", methods=["GET", "POST"])
@manager_required
def simulator_page(account_id: int) -> Any:
    workspace_id = current_workspace_id()
    account = simulator.sandbox_account(workspace_id, account_id)
    form = SimulatorForm()
    phone = request.args.get("phone") or ""
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                upload = form.file.data
                if upload and upload.filename:
                    with spooled(upload, LARGEST_UPLOAD) as spool:
                        phone, _message_id = simulator.customer_sends_file(
                            workspace_id,
                            account_id,
                            form.phone.data or "",
                            spool,
                            form.text.data or "",
                            form.name.data or "",
                        )
                else:
                    phone = simulator.customer_writes(
                        workspace_id,
                        account_id,
                        form.phone.data or "",
                        form.text.data or "",
                        form.name.data or "",
                    )
            except DomainError as exc:
                form.form_errors.append(exc.message)
                status = exc.status
            else:
                return redirect(url_for("settings.simulator_page", account_id=account_id, phone=phone))
        else:
            status = 400
    elif phone:
        form.phone.data = phone
    messages = simulator.thread(workspace_id, account_id, phone) if phone else []
    return render(
        "settings/simulator.html",
        "settings/_simulator_thread.html",
        form=form,
        account=account,
        phone=phone,
        messages=messages,
    ), status


@bp.post("/numbers/<int:account_id>/templates/sync")
@manager_required
def sync_templates(account_id: int) -> Response:
    """Queues the sync (the web process never calls WhatsApp itself)."""
    from crm.whatsapp import templates
    from crm.whatsapp.tasks import sync_account_templates_task

    account = accounts.get_account(current_workspace_id(), account_id)
    try:
        templates.check_can_sync(account)
    except DomainError as exc:
        flash(exc.message, "error")
    else:
        sync_account_templates_task(account.id)
        flash(_("Templates are being synced: reload this page in a few seconds."), "info")
    return redirect(url_for("settings.number", account_id=account_id))
