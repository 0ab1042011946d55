"""Broadcast pages: the list, the compose form (with its live audience count, template fields and
preview), and each broadcast's live progress with its recipients and CSV export.

Who may do what: every member sees the list and follows a broadcast's progress; composing,
pausing, resuming, cancelling and exporting the results are for owners and admins.
"""

from __future__ import annotations

import functools
from typing import Any
from zoneinfo import ZoneInfo

from flask import flash, g, redirect, render_template, request, url_for
from flask_babel import format_datetime, ngettext
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from crm.auth.decorators import manager_required
from crm.broadcasts import bp, compose, results, services
from crm.broadcasts.forms import ComposeForm
from crm.broadcasts.models import Broadcast, BroadcastStatus
from crm.broadcasts.progress import details, snapshot
from crm.broadcasts.render import MAX_VARIANTS
from crm.db import utcnow
from crm.errors import DomainError, NotFound, ValidationFailed
from crm.htmx import render, wants_fragment
from crm.leads.export import csv_download
from crm.media.models import MediaFile
from crm.params import page_limit

# --- the list ---------------------------------------------------------------------------------


def _list_context() -> dict[str, Any]:
    page = results.list_page(g.workspace_id, page_limit(), request.args.get("cursor") or None)
    return {
        "entries": page.items,
        "next_cursor": page.next_cursor,
        "starts_later": bool(request.args.get("cursor")),
    }


@bp.get("/")
@login_required
def index() -> str:
    return render("broadcasts/index.html", "broadcasts/_rows.html", **_list_context())


@bp.get("/rows")
@login_required
def rows() -> str:
    """The next page of the list ("Load more", or the revealed trigger under it)."""
    return render_template("broadcasts/_rows.html", **_list_context())


@bp.get("/<int:broadcast_id>/row")
@login_required
def row(broadcast_id: int) -> str:
    """One row of the list: a broadcast still going asks for its own row again (polling)."""
    entry = results.with_progress(services.get_broadcast(g.workspace_id, broadcast_id))
    return render_template("broadcasts/_row.html", entry=entry)


# --- composing --------------------------------------------------------------------------------


def _timezone() -> str:
    return str(g.membership.workspace.timezone or "UTC")


def _compose_context(form: ComposeForm) -> dict[str, Any]:
    from crm.leads.search import workspace_tags
    from crm.media import av
    from crm.media.limits import upload_max

    offered = compose.numbers(g.workspace_id)
    options = compose.template_options(g.workspace_id, form.account_ids, offered)
    providers = {n.provider for n in offered} or {"cloud"}
    ffmpeg = av.available()
    workspace_id = g.workspace_id
    return {
        "form": form,
        "numbers": offered,
        "groups": compose.groups(workspace_id),
        "tags": workspace_tags(workspace_id),
        "fields": compose.custom_field_names(workspace_id),
        "templates": options,
        "template": compose.find_template(options, form.template),
        "preview": _preview(form, options),
        "max_variants": MAX_VARIANTS,
        "upload_limits": {
            kind: min(upload_max(p, kind, convertible=ffmpeg) for p in providers)
            for kind in ("image", "video", "document")
        },
        "timezone": _timezone(),
        "now_local": utcnow().astimezone(_zone()).strftime("%Y-%m-%dT%H:%M"),
    }


def _zone() -> ZoneInfo:
    return ZoneInfo(_timezone())


def _preview(form: ComposeForm, options: list[compose.TemplateOption] | None) -> compose.Preview:
    draft = form.audience_draft()
    draft.variants = form.variants
    draft.template_values = form.template_values
    template = compose.find_template(options, form.template) if form.kind == "template" else None
    return compose.preview(g.workspace_id, draft, template)


def _compose_page(form: ComposeForm, status: int = 200) -> Any:
    return render_template("broadcasts/new.html", **_compose_context(form)), status


def _default_form() -> ComposeForm:
    offered = compose.numbers(g.workspace_id)
    usable = [n.id for n in offered if n.usable]
    return ComposeForm(account_ids=usable or [n.id for n in offered])


@bp.route("/new", methods=["GET", "POST"])
@manager_required
def new() -> Any:
    if request.method == "GET":
        return _compose_page(_default_form())
    form = ComposeForm.from_data(request.form)
    upload = request.files.get("file")
    has_file = upload is not None and bool(upload.filename)
    form.had_file = has_file
    form.check_choices()
    if has_file and form.kind == "template":
        form.add_error("file", _("A template is sent as it was approved, without a file."))
    if form.has_errors:
        return _compose_page(form, 422)
    media: MediaFile | None = None
    try:
        draft = form.draft(_timezone(), utcnow(), current_user.id)
        if not draft.group_ids and services.audience_count(g.workspace_id, draft) == 0:
            raise ValidationFailed(
                _("No opted-in lead matches this audience: nobody would get it."), code="empty_audience"
            )
        if has_file and upload is not None:
            senders = compose.group_accounts(g.workspace_id, draft.group_ids) or draft.account_ids or []
            media = compose.attach_file(g.workspace_id, senders, upload)
            draft.media_file_id = media.id
        broadcast = services.create_broadcast(g.workspace_id, draft)
    except DomainError as error:
        compose.discard_file(media)
        form.show_error(error)
        return _compose_page(form, error.status)
    if media is not None:
        from crm.media.tasks import prepare_media_task

        prepare_media_task(media.id)  # ready before the first recipient's turn, if it can be
    if broadcast.status == BroadcastStatus.SCHEDULED.value and broadcast.scheduled_at is not None:
        flash(_("Broadcast scheduled for %(when)s.", when=format_datetime(broadcast.scheduled_at)), "success")
    else:
        count = broadcast.recipients_count
        flash(
            ngettext(
                "Broadcast started: %(num)s recipient.", "Broadcast started: %(num)s recipients.", count
            ),
            "success",
        )
    return redirect(url_for("broadcasts.detail", broadcast_id=broadcast.id), 303)


@bp.get("/new/audience")
@manager_required
def audience_count() -> str:
    """How many the audience being composed reaches, as it is typed (the form's values)."""
    form = ComposeForm.from_data(request.args)
    error, found = "", 0
    try:
        if form.audience == "groups":
            found = len(form.group_ids)
        else:
            form.exclusion_days()
            found = services.audience_count(g.workspace_id, form.audience_draft())
    except DomainError as exc:
        error = exc.message
    return render_template("broadcasts/_audience_count.html", form=form, found=found, error=error)


@bp.get("/new/preview")
@manager_required
def preview() -> str:
    form = ComposeForm.from_data(request.args)
    options = compose.template_options(g.workspace_id, form.account_ids, compose.numbers(g.workspace_id))
    return render_template("broadcasts/_preview.html", preview=_preview(form, options))


@bp.get("/new/template")
@manager_required
def template_section() -> str:
    """The message kind and template fields, for the numbers and template now chosen."""
    form = ComposeForm.from_data(request.args)
    options = compose.template_options(g.workspace_id, form.account_ids, compose.numbers(g.workspace_id))
    if options is None:
        form.kind = "text"
    return render_template(
        "broadcasts/_template_section.html",
        form=form,
        templates=options,
        template=compose.find_template(options, form.template),
    )


# --- one broadcast ----------------------------------------------------------------------------

STATUS_FILTERS = ("", *results.OUTCOMES)


def _outcome() -> str:
    status = request.args.get("status", "")
    return status if status in STATUS_FILTERS else ""


def _recipients_context(broadcast: Broadcast) -> dict[str, Any]:
    outcome = _outcome()
    page = results.recipient_page(broadcast.id, outcome, page_limit(), request.args.get("cursor") or None)
    return {
        "broadcast_id": broadcast.id,
        "variants": len(broadcast.variants or []),
        "recipients": page.items,
        "next_cursor": page.next_cursor,
        "status": outcome,
        "starts_later": bool(request.args.get("cursor")),
    }


@bp.get("/<int:broadcast_id>")
@login_required
def detail(broadcast_id: int) -> str:
    """The progress page; the status filter swaps the recipients' table only."""
    broadcast = services.get_broadcast(g.workspace_id, broadcast_id)
    if wants_fragment():
        return render_template("broadcasts/_recipients.html", **_recipients_context(broadcast))
    return render_template(
        "broadcasts/broadcast.html",
        progress=snapshot(g.workspace_id, broadcast.id),
        details=details(g.workspace_id, broadcast),
        statuses=STATUS_FILTERS,
        **_recipients_context(broadcast),
    )


@bp.get("/<int:broadcast_id>/recipients")
@login_required
def recipients(broadcast_id: int) -> str:
    """The next page of recipients, for "Load more" under the table."""
    broadcast = services.get_broadcast(g.workspace_id, broadcast_id)
    return render_template("broadcasts/_recipient_rows.html", **_recipients_context(broadcast))


@bp.get("/<int:broadcast_id>/live")
@login_required
def live(broadcast_id: int) -> str:
    """The state and progress as out-of-band fragments: what a page fetches when its websocket
    comes back (pushes are lossy), and what a finished broadcast's counters poll for receipts."""
    return render_template("broadcasts/_live.html", progress=snapshot(g.workspace_id, broadcast_id), error="")


def _act(broadcast_id: int, action: Any, done: str) -> Any:
    """Pause, resume or cancel; the page gets its new state back (every other open page gets it
    over the websocket). A refusal (already finished) is shown where the buttons are."""
    error = ""
    try:
        action(g.workspace_id, broadcast_id)
    except NotFound:
        raise
    except DomainError as exc:
        error = exc.message
    if wants_fragment():
        progress = snapshot(g.workspace_id, broadcast_id)
        return render_template("broadcasts/_live.html", progress=progress, error=error)
    flash(error or done, "error" if error else "success")
    return redirect(url_for("broadcasts.detail", broadcast_id=broadcast_id), 303)


@bp.post("/<int:broadcast_id>/pause")
@manager_required
def pause(broadcast_id: int) -> Any:
    return _act(
        broadcast_id, functools.partial(services.pause_broadcast, reason=None), _("Broadcast paused.")
    )


@bp.post("/<int:broadcast_id>/resume")
@manager_required
def resume(broadcast_id: int) -> Any:
    return _act(broadcast_id, services.resume_broadcast, _("Broadcast resumed."))


@bp.post("/<int:broadcast_id>/cancel")
@manager_required
def cancel(broadcast_id: int) -> Any:
    return _act(broadcast_id, services.cancel_broadcast, _("Broadcast cancelled."))


@bp.get("/<int:broadcast_id>/export.csv")
@manager_required
def export(broadcast_id: int) -> Response:
    """Each recipient's outcome as CSV (formulas neutralised, like the leads export)."""
    broadcast = services.get_broadcast(g.workspace_id, broadcast_id)
    workspace_id, name = g.workspace_id, results.csv_name(broadcast)
    return csv_download(lambda: results.export_csv(workspace_id, broadcast_id), name)
