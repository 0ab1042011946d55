"""One lead: the page (profile, consent and its history, conversations, duplicates), the new and
edit forms, opting in or out, writing first, moving to the trash and merging a duplicate in.

Roles as in crm/leads/views.py: trash and merge are for owners and admins.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from crm.auth.decorators import manager_required
from crm.errors import DomainError, Forbidden, NotFound
from crm.htmx import render, wants_fragment
from crm.leads import bp
from crm.leads.consent import ConsentChange, set_consent
from crm.leads.forms import LeadForm, NewLeadForm, edit_form
from crm.leads.merge import merge_leads
from crm.leads.models import ConsentSource, Lead
from crm.leads.outreach import first_message, start_conversation, start_with_template
from crm.leads.pages import lead_profile
from crm.leads.services import DuplicateLead, LeadChanges, create_lead, get_lead, update_lead
from crm.leads.trash import trash_leads
from crm.params import parse_id


def _by_form() -> ConsentChange:
    """A consent change made by the signed-in member in the app."""
    return ConsentChange(ConsentSource.FORM, user_id=current_user.id)


def _form_page(form: LeadForm, lead: Lead | None, status: int = 200, error: DomainError | None = None) -> Any:
    """The form again, with the service's error on its field; a duplicate phone links to that lead."""
    duplicate = None
    if error is not None:
        form.show_error(error)
        if isinstance(error, DuplicateLead) and error.lead_id is not None:
            duplicate = get_lead(g.workspace_id, error.lead_id, include_trash=True)
    return render_template("leads/form.html", form=form, lead=lead, duplicate=duplicate), status


@bp.route("/new", methods=["GET", "POST"])
@login_required
def new_lead() -> Any:
    form = NewLeadForm()
    if request.method == "GET":
        return _form_page(form, None)
    form.load_field_rows(request.form)
    if not form.validate_on_submit():
        return _form_page(form, None, 400)
    try:
        lead = create_lead(
            g.workspace_id,
            phone=form.phone.data or "",
            name=form.name.data or "",
            email=form.email.data or None,
            notes=form.notes.data or "",
            opt_in=bool(form.opt_in.data),
            tags=form.tag_list(),
            custom_fields=form.custom_fields(),
            consent=_by_form(),
        )
    except DomainError as error:
        return _form_page(form, None, error.status, error)
    flash(_("Lead saved."), "success")
    return redirect(url_for("leads.lead", lead_id=lead.id), 303)


@bp.get("/<int:lead_id>")
@login_required
def lead(lead_id: int) -> str:
    profile = lead_profile(g.workspace_id, lead_id)
    context = {**_composer(profile.lead), **_broadcasts(lead_id)}
    return render_template("leads/lead.html", profile=profile, **context)


def _broadcasts(lead_id: int) -> dict[str, Any]:
    from crm.broadcasts.services import lead_broadcasts, open_broadcasts

    manager = g.membership.role_enum.manages_team
    return {
        "lead_broadcasts": lead_broadcasts(g.workspace_id, lead_id),
        "open_broadcasts": open_broadcasts(g.workspace_id) if manager else [],
    }


@bp.post("/<int:lead_id>/broadcasts")
@manager_required
def add_to_broadcast(lead_id: int) -> Response:
    """Add the lead to a broadcast that has not finished; their turn comes with the others'."""
    from crm.broadcasts.services import add_lead

    get_lead(g.workspace_id, lead_id)  # another workspace's lead: 404 before anything else
    broadcast_id = parse_id(request.form.get("broadcast_id"))
    if broadcast_id is None:
        raise DomainError(_("Choose a broadcast."), code="invalid_broadcast")
    try:
        added = add_lead(g.workspace_id, broadcast_id, lead_id)
    except DomainError as error:
        if error.status == 404:
            raise
        flash(error.message, "error")
    else:
        flash(_("Added to the broadcast.") if added else _("Already in that broadcast."), "success")
    return redirect(url_for("leads.lead", lead_id=lead_id), 303)


@bp.route("/<int:lead_id>/edit", methods=["GET", "POST"])
@login_required
def edit(lead_id: int) -> Any:
    current = get_lead(g.workspace_id, lead_id)
    form = edit_form(current, request.form if request.method == "POST" else None)
    if request.method == "GET":
        return _form_page(form, current)
    if not form.validate_on_submit():
        return _form_page(form, current, 400)
    try:
        changes = LeadChanges(
            phone=(form.phone.data or "").strip() or None,
            name=form.name.data or "",
            email=form.email.data or "",
            notes=form.notes.data or "",
            tags=form.tag_list(),
            custom_fields=form.custom_fields(),
        )
        update_lead(g.workspace_id, lead_id, changes, _by_form())
    except DomainError as error:
        if isinstance(error, NotFound):
            raise
        return _form_page(form, current, error.status, error)
    flash(_("Lead saved."), "success")
    return redirect(url_for("leads.lead", lead_id=lead_id), 303)


@bp.post("/<int:lead_id>/consent")
@login_required
def consent(lead_id: int) -> Any:
    """Opt in or out by a member (recorded as "form" with their name in the history)."""
    current = get_lead(g.workspace_id, lead_id)
    choice = request.form.get("opt_in")
    if choice not in ("true", "false"):
        raise DomainError(_("Choose opt in or opt out."), code="invalid_consent")
    if choice == "true" and current.opted_out_at is not None and not g.membership.role_enum.manages_team:
        # Someone who said stop comes back by writing the keyword, or by asking the team: only
        # an owner or admin records that for them.
        raise Forbidden(_("Only an owner or admin can opt back in a lead who opted out."))
    set_consent(g.workspace_id, [lead_id], choice == "true", _by_form())
    if wants_fragment():
        # The consent card, and the "write to them" form after it (an opt-out: nothing can be sent).
        profile = lead_profile(g.workspace_id, lead_id)
        conversations = render_template(
            "leads/_conversations.html", profile=profile, oob=True, **_composer(profile.lead)
        )
        card = render_template("leads/_consent.html", lead=profile.lead, consent=profile.consent)
        return card + conversations
    flash(_("Opted in.") if choice == "true" else _("Opted out."), "success")
    return redirect(url_for("leads.lead", lead_id=lead_id), 303)


def _composer(lead: Lead, account_id: int | None = None, **context: Any) -> dict[str, Any]:
    """The "write to them" form: a text box, or the templates when the number that would carry
    it is outside the 24-hour window."""
    return {
        "send_key": uuid.uuid4().hex,
        "sent_conversation_id": None,
        "send_error": "",
        "text": "",
        "first": first_message(g.workspace_id, lead, account_id),
        "account_id": account_id,
        **context,
    }


@bp.get("/<int:lead_id>/first-message")
@login_required
def first_message_form(lead_id: int) -> str:
    """The form's body for the number chosen in it (text, or the number's templates)."""
    lead = get_lead(g.workspace_id, lead_id)
    context = _composer(lead, parse_id(request.args.get("account_id")))
    return render_template("leads/_first_message.html", lead=lead, **context)


@bp.get("/<int:lead_id>/template")
@login_required
def template_fields(lead_id: int) -> str:
    """The chosen template's variables and a preview; a template of another number than the
    form's is a 404, as in the inbox."""
    from crm.whatsapp import templates

    get_lead(g.workspace_id, lead_id)
    chosen = parse_id(request.args.get("template_id")), parse_id(request.args.get("account_id"))
    return render_template("inbox/_template_fields.html", **templates.fields_context(g.workspace_id, *chosen))


@bp.post("/<int:lead_id>/messages")
@login_required
def message(lead_id: int) -> Any:
    """Write first to the lead: text, or an approved template. A refusal (opted out, no number can
    send, outside the 24-hour window) comes back in the form, with what was typed kept."""
    current = get_lead(g.workspace_id, lead_id)
    text = request.form.get("text", "")
    account_id = parse_id(request.form.get("account_id"))
    key = (request.form.get("send_key") or "")[:200] or None
    try:
        if "template_id" in request.form:
            values = {k[len("param-") :]: v for k, v in request.form.items() if k.startswith("param-")}
            template_id = parse_id(request.form.get("template_id"))
            queued = start_with_template(
                g.workspace_id,
                lead_id,
                template_id,
                values,
                user_id=current_user.id,
                account_id=account_id,
                idempotency_key=key,
            )
        else:
            queued = start_conversation(
                g.workspace_id,
                lead_id,
                text,
                user_id=current_user.id,
                account_id=account_id,
                idempotency_key=key,
            )
    except DomainError as error:
        if isinstance(error, NotFound):
            raise
        context = _composer(current, account_id, send_error=error.message, text=text[:4096])
        profile = lead_profile(g.workspace_id, lead_id)
        page = render(
            "leads/lead.html", "leads/_conversations.html", profile=profile, **context, **_broadcasts(lead_id)
        )
        return page, error.status
    conversation_id = queued.message.conversation_id
    if wants_fragment():  # the card again: the conversation listed, a fresh form
        profile = lead_profile(g.workspace_id, lead_id)
        context = _composer(profile.lead, account_id, sent_conversation_id=conversation_id)
        return render_template("leads/_conversations.html", profile=profile, **context)
    flash(_("Message queued: it is in the inbox."), "success")
    return redirect(url_for("inbox.conversation", conversation_id=conversation_id), 303)


@bp.post("/<int:lead_id>/archive/restore")
@login_required
def restore_archive(lead_id: int) -> Response:
    """Bring the lead's archived conversations back (any member: it is their customer's history).
    A missing or damaged archive file changes nothing and says so."""
    from crm.archiving.restore import restore_lead_history

    get_lead(g.workspace_id, lead_id)  # another workspace's lead: 404 before anything else
    try:
        restored = restore_lead_history(g.workspace_id, lead_id, user_id=current_user.id)
    except DomainError as error:
        if error.status == 404:
            raise
        flash(error.message, "error")
    else:
        flash(
            ngettext(
                "%(num)d archived message restored.", "%(num)d archived messages restored.", restored.messages
            ),
            "success",
        )
    return redirect(url_for("leads.lead", lead_id=lead_id), 303)


@bp.post("/<int:lead_id>/trash")
@manager_required
def trash_lead(lead_id: int) -> Response:
    get_lead(g.workspace_id, lead_id)
    trash_leads(g.workspace_id, [lead_id])
    days = g.membership.workspace.trash_days
    flash(
        ngettext(
            "Moved to the trash: it can be restored for %(num)d day.",
            "Moved to the trash: it can be restored for %(num)d days.",
            days,
        ),
        "success",
    )
    return redirect(url_for("leads.index"), 303)


@bp.route("/<int:lead_id>/merge", methods=["GET", "POST"])
@manager_required
def merge(lead_id: int) -> Any:
    """Merge a duplicate into this lead: a confirmation page first, then the merge."""
    keep = get_lead(g.workspace_id, lead_id)
    other_id = parse_id(request.values.get("other_id"))
    if other_id is None:
        raise DomainError(_("Choose the lead to merge into this one."), code="invalid_merge")
    if request.method == "GET":
        other = get_lead(g.workspace_id, other_id)
        return render_template("leads/merge.html", keep=keep, other=other)
    merge_leads(g.workspace_id, lead_id, other_id)
    flash(_("Merged: this lead now has the other one's conversations, tags and history."), "success")
    return redirect(url_for("leads.lead", lead_id=lead_id), 303)
