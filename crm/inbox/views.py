"""The inbox: conversation list, thread, composer. Live updates arrive over the websocket."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from flask import abort, g, render_template, request
from flask_login import current_user, login_required
from sqlalchemy.orm.attributes import set_committed_value
from werkzeug.local import LocalProxy

from crm.auth.decorators import manager_required
from crm.errors import DomainError
from crm.extensions import db
from crm.htmx import render, wants_fragment
from crm.inbox import bp, listing, notes
from crm.inbox import services as inbox
from crm.inbox.team import team_facts
from crm.leads.phones import for_humans
from crm.params import DEFAULT_LIMIT, page_limit, parse_id
from crm.realtime.fragments import other_viewers
from crm.whatsapp.models import WhatsAppAccount

if TYPE_CHECKING:
    from crm.ai.models import AISuggestion
    from crm.inbox.models import Conversation

VIEWS = ("all", "mine", "unassigned", "unread")


DEFAULT_FILTERS = {"view": "all", "status": "open", "q": "", "account": "", "tag": ""}


def _filters() -> dict[str, str]:
    """What the list shows, from the query string; anything odd falls back to the default."""
    view = request.args.get("view", "")
    status = request.args.get("status", "")
    account = parse_id(request.args.get("account"))
    return {
        "view": view if view in VIEWS else DEFAULT_FILTERS["view"],
        "status": status if status in ("open", "closed") else DEFAULT_FILTERS["status"],
        "q": request.args.get("q", "")[:100],
        "account": str(account) if account is not None else "",
        "tag": request.args.get("tag", "")[:64],
    }


def _ai_on() -> bool:
    """Whether the workspace has AI replies on: the bot switch and "suggest reply" show then."""
    return team_facts(g.workspace_id).ai_on


def _list_context(selected: int | None = None, limit: int | None = None) -> dict[str, Any]:
    """The list's context; ``limit`` overrides ``?limit=`` (a thread's page size, on its page)."""
    from crm.settings.ai import ai_problem
    from crm.whatsapp.accounts import list_accounts

    workspace_id = g.workspace_id
    filters = _filters()
    page = listing.filtered_conversations(
        g.workspace_id,
        user_id=current_user.id,
        view=filters["view"],
        status=filters["status"],
        q=filters["q"],
        account_id=int(filters["account"]) if filters["account"] else None,
        tag=filters["tag"],
        limit=limit or page_limit(),
        cursor=request.args.get("cursor"),
    )
    return {
        "conversations": page.items,
        "next_cursor": page.next_cursor,
        "filters": filters,
        # Something narrows the list (an empty one then says nothing matches, not "none yet").
        "narrowed": {**filters, "q": filters["q"].strip()} != DEFAULT_FILTERS,
        "previews": listing.last_messages(workspace_id, [c.id for c in page.items]),
        "selected": selected,
        "for_humans": for_humans,
        # For the filter form of the whole page only: a list fragment never loads them.
        "numbers": LocalProxy(lambda: list_accounts(workspace_id)),
        "tags": LocalProxy(lambda: inbox.workspace_tags(workspace_id)),
        # The managers' banner when AI replies are on but can't answer (the page only, too).
        "ai_problem": LocalProxy(lambda: ai_problem(workspace_id)),
    }


@bp.get("/")
@login_required
def index() -> str:
    return render("inbox/index.html", "inbox/_conversations.html", **_list_context())


@bp.get("/conversations/<int:conversation_id>")
@login_required
def conversation(conversation_id: int) -> str:
    limit = page_limit()  # before anything is read: a bad one is a 400
    current, number, has_notes = inbox.open_thread(g.workspace_id, conversation_id)
    thread = inbox.thread_page(g.workspace_id, conversation_id, None, limit)
    context = {
        "conversation": current,
        "messages": list(reversed(thread.items)),
        "older_cursor": thread.next_cursor,
        "older_limit": _asked_limit(limit),
        "send_key": uuid.uuid4().hex,
        "upload_limits": upload_limits(current.account_id, number),
        "for_humans": for_humans,
        "members": inbox.assignable_members(g.workspace_id),
        "window_closed": inbox.window_closed(current, number),
        "notes": (recent := notes.recent_notes(g.workspace_id, conversation_id) if has_notes else []),
        "note_authors": notes.note_author_names(g.workspace_id, recent),
        "viewer_names": other_viewers(g.workspace_id, conversation_id, current_user.id),
        "ai_on": _ai_on(),
    }
    if context["window_closed"]:
        from crm.whatsapp.templates import sendable_templates

        context["templates"] = sendable_templates(g.workspace_id, current.account_id)
    # A page fetching again what it shows (its socket was down, or events were lost: app.js) marks
    # nothing read, as messages pushed to an open thread don't: the agent may not be looking.
    unread = 0 if request.headers.get("X-Zapdesk-Refetch") else current.unread_count
    if unread:
        set_committed_value(current, "unread_count", 0)  # shown read; stored below, after rendering
    if wants_fragment():  # not the Back button restoring a page htmx no longer has: the whole page
        page = render_template("inbox/_thread.html", **context)
    else:
        listed = _list_context(selected=conversation_id, limit=DEFAULT_LIMIT)
        page = render_template("inbox/index.html", **{**listed, **context})
    if unread:
        set_committed_value(current, "unread_count", unread)
        inbox.mark_read(current)
    return page


@bp.get("/conversations/<int:conversation_id>/older")
@login_required
def older_messages(conversation_id: int) -> str:
    inbox.get_conversation(g.workspace_id, conversation_id)  # 404 for another workspace's first
    cursor = request.args.get("cursor")
    if not cursor:
        abort(400)
    limit = page_limit()
    page = inbox.thread_page(g.workspace_id, conversation_id, cursor, limit)
    return render_template(
        "inbox/_older.html",
        conversation_id=conversation_id,
        messages=list(reversed(page.items)),
        older_cursor=page.next_cursor,
        older_limit=_asked_limit(limit),
    )


def _asked_limit(limit: int) -> int | None:
    """The page size the next older page asks for: only one the address asked for (``?limit=``,
    up to 100), so the usual link stays as it was."""
    return None if limit == DEFAULT_LIMIT else limit


@bp.post("/conversations/<int:conversation_id>/messages")
@login_required
def send(conversation_id: int) -> Any:
    """Text, or a file with an optional caption. Mistakes (a file WhatsApp won't take, too large)
    come back in the composer, with what was typed kept."""
    from crm.inbox.sending import reply, reply_with_file  # not at import: the pipeline imports crm.inbox

    conversation = inbox.get_conversation(g.workspace_id, conversation_id)
    key = request.form.get("send_key") or None
    if inbox.window_closed(conversation) and not _sent_already(key):
        return _window_closed(conversation)  # a tab opened while the window was open: nothing sent
    upload = request.files.get("file")
    try:
        if upload is not None and upload.filename:
            queued = reply_with_file(
                g.workspace_id,
                conversation_id,
                upload,
                request.form.get("text", ""),
                user_id=current_user.id,
                idempotency_key=key,
            )
        else:
            queued = reply(
                g.workspace_id,
                conversation_id,
                request.form.get("text", ""),
                user_id=current_user.id,
                idempotency_key=key,
            )
    except DomainError as error:
        if request.headers.get("HX-Request") != "true":
            raise
        typed = request.form.get("text", "")[:4096]
        composer = _composer(conversation.account_id, conversation_id, error=error.message, text=typed)
        return composer, error.status
    # The message itself reaches every open tab, this one included, over the websocket; the
    # answer is a fresh composer (with a new key, so the next message is a new send).
    return _composer(conversation.account_id, conversation_id, sent_id=queued.message.id)


def _sent_already(key: str | None) -> bool:
    """Whether this form's key already sent its message: a retry of a send queued just before the
    window closed is answered as that send, not refused."""
    from crm.whatsapp.outbox import find_by_idempotency_key

    return bool(key) and find_by_idempotency_key(g.workspace_id, str(key), None) is not None


def _window_closed(conversation: Conversation) -> tuple[str, int]:
    """A text or a file outside the Cloud API's 24-hour window, which WhatsApp would refuse
    (131047): the page gets the templates in place of its composer, saying why."""
    from crm.leads.outreach import WindowClosed
    from crm.whatsapp.templates import sendable_templates

    refused = WindowClosed()
    if request.headers.get("HX-Request") != "true":
        raise refused
    page = render_template(
        "inbox/_window_closed.html",
        conversation=conversation,
        templates=sendable_templates(g.workspace_id, conversation.account_id),
        send_key=uuid.uuid4().hex,
        error=refused.message,
    )
    return page, refused.status


def _composer(account_id: int, conversation_id: int, **context: Any) -> str:
    return render_template(
        "inbox/_composer.html",
        conversation_id=conversation_id,
        send_key=uuid.uuid4().hex,
        upload_limits=upload_limits(account_id),
        ai_on=_ai_on(),
        **context,
    )


def upload_limits(account_id: int, account: WhatsAppAccount | None = None) -> dict[str, int]:
    """The most each kind of file can weigh when attached on this number (shown, and checked by
    the page before uploading)."""
    from crm.media import av
    from crm.media.limits import upload_max

    account = account or db.session.get(WhatsAppAccount, account_id)
    provider = account.provider if account else "cloud"
    ffmpeg = av.available()
    return {
        kind: upload_max(provider, kind, convertible=ffmpeg)
        for kind in ("image", "video", "audio", "document")
    }


def _thread_header(conversation_id: int) -> str:
    current = inbox.get_conversation(g.workspace_id, conversation_id)
    return render_template(
        "inbox/_thread_header.html",
        conversation=current,
        for_humans=for_humans,
        members=inbox.assignable_members(g.workspace_id),
        ai_on=_ai_on(),
    )


@bp.get("/conversations/<int:conversation_id>/replies")
@login_required
def canned_suggestions(conversation_id: int) -> str:
    """Saved replies matching the ``/shortcut`` being typed, filled in for this customer."""
    from crm.inbox import canned

    current = inbox.get_conversation(g.workspace_id, conversation_id)
    found = canned.suggestions(g.workspace_id, request.args.get("text", ""))
    filled = [(reply.shortcut, canned.fill(reply.text, current.lead.name or "")) for reply in found]
    return render_template("inbox/_canned.html", conversation_id=conversation_id, replies=filled)


@bp.get("/conversations/<int:conversation_id>/template")
@login_required
def template_fields(conversation_id: int) -> str:
    """The chosen template's variables and a preview, for the closed-window composer."""
    from crm.whatsapp import templates

    current = inbox.get_conversation(g.workspace_id, conversation_id)
    template_id = parse_id(request.args.get("template_id"))
    context = templates.fields_context(g.workspace_id, template_id, current.account_id)
    return render_template("inbox/_template_fields.html", **context)


@bp.post("/conversations/<int:conversation_id>/template")
@login_required
def send_template(conversation_id: int) -> str:
    from crm.inbox.sending import send_template as queue_template
    from crm.whatsapp.templates import sendable_templates

    current = inbox.get_conversation(g.workspace_id, conversation_id)
    values = {key[len("param-") :]: value for key, value in request.form.items() if key.startswith("param-")}
    queue_template(
        g.workspace_id,
        conversation_id,
        parse_id(request.form.get("template_id")),
        values,
        user_id=current_user.id,
        idempotency_key=request.form.get("send_key") or None,
    )
    return render_template(
        "inbox/_template_composer.html",
        conversation=current,
        templates=sendable_templates(g.workspace_id, current.account_id),
        send_key=uuid.uuid4().hex,
    )


@bp.post("/conversations/<int:conversation_id>/tags")
@login_required
def add_tag(conversation_id: int) -> str:
    inbox.tag_lead(g.workspace_id, conversation_id, request.form.get("tag", ""))
    return _thread_header(conversation_id)


@bp.post("/conversations/<int:conversation_id>/tags/remove")
@login_required
def remove_tag(conversation_id: int) -> str:
    inbox.untag_lead(g.workspace_id, conversation_id, request.form.get("tag", ""))
    return _thread_header(conversation_id)


@bp.post("/conversations/<int:conversation_id>/take")
@login_required
def take(conversation_id: int) -> str:
    inbox.take(g.workspace_id, conversation_id, current_user.id)
    return _thread_header(conversation_id)


@bp.post("/conversations/<int:conversation_id>/assign")
@login_required
def assign(conversation_id: int) -> str:
    inbox.get_conversation(g.workspace_id, conversation_id)
    raw = request.form.get("assignee_id") or None
    assignee_id = parse_id(raw)
    if raw is not None and assignee_id is None:
        abort(400)
    inbox.assign(g.workspace_id, conversation_id, assignee_id)
    return _thread_header(conversation_id)


@bp.post("/conversations/<int:conversation_id>/status")
@login_required
def set_status(conversation_id: int) -> str:
    inbox.get_conversation(g.workspace_id, conversation_id)
    inbox.set_status(g.workspace_id, conversation_id, request.form.get("status", ""))
    return _thread_header(conversation_id)


@bp.post("/conversations/<int:conversation_id>/bot")
@login_required
def set_bot(conversation_id: int) -> str:
    """The conversation's bot switch (the other open tabs follow over the websocket)."""
    inbox.get_conversation(g.workspace_id, conversation_id)  # 404 for another workspace's first
    wanted = request.form.get("enabled")
    if wanted not in ("0", "1"):
        abort(400)
    inbox.set_ai_enabled(g.workspace_id, conversation_id, wanted == "1")
    return _thread_header(conversation_id)


# A draft polled for longer than this (the worker is down or stuck) is given up on.
SUGGESTION_POLLS = 90


@bp.post("/conversations/<int:conversation_id>/suggestions")
@login_required
def suggest_reply(conversation_id: int) -> str:
    """The composer's "suggest reply": a draft is asked of Gemini in the worker; the answer
    polls for it (or shows it at once when the queue runs tasks inline)."""
    from crm.ai.settings import settings_of
    from crm.ai.suggest import request_suggestion

    inbox.get_conversation(g.workspace_id, conversation_id)  # 404 for another workspace's first
    if not settings_of(g.workspace_id).enabled:  # decided from the stored switch, not the page's copy
        return _suggestion(conversation_id, None, error="ai_off")
    suggestion = request_suggestion(g.workspace_id, conversation_id, current_user.id)
    return _suggestion(conversation_id, suggestion)


@bp.get("/conversations/<int:conversation_id>/suggestions/<int:suggestion_id>")
@login_required
def suggestion(conversation_id: int, suggestion_id: int) -> str:
    from crm.ai.suggest import get_suggestion

    found = get_suggestion(g.workspace_id, suggestion_id, current_user.id)
    if found is None or found.conversation_id != conversation_id:
        abort(404)
    polls = request.args.get("n", type=int) or 0
    if found.status == "pending" and polls >= SUGGESTION_POLLS:
        return _suggestion(conversation_id, None, error="gave_up")
    return _suggestion(conversation_id, found, polls=polls)


def _suggestion(
    conversation_id: int, found: AISuggestion | None, *, error: str | None = None, polls: int = 0
) -> str:
    return render_template(
        "inbox/_suggestion.html",
        conversation_id=conversation_id,
        suggestion=found,
        error=error or (found.error if found is not None else None),
        polls=polls,
    )


@bp.post("/conversations/<int:conversation_id>/notes")
@login_required
def add_note(conversation_id: int) -> str:
    notes.add_note(g.workspace_id, conversation_id, current_user.id, request.form.get("text", ""))
    # The note itself arrives over the websocket, in every open tab; this answers a clean form.
    return render_template("inbox/_note_form.html", conversation_id=conversation_id)


@bp.post("/messages/<int:message_id>/delete")
@manager_required
def delete_message(message_id: int) -> str:
    """Owners and admins remove a message (and its file) from Zapdesk; every open tab drops it."""
    inbox.delete_message(g.workspace_id, message_id)
    return ""
