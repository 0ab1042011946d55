"""Which fragment each event refreshes: HTML with ``hx-swap-oob`` and a stable id."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import render_template

from crm.errors import DomainError
from crm.realtime.broker import Event
from crm.realtime.fanout import BROADCAST_KINDS, broadcast_of

if TYPE_CHECKING:
    from crm.inbox.models import Conversation

log = logging.getLogger(__name__)


def _message_fragments(workspace_id: int, event: Event) -> str | None:
    from crm.extensions import db
    from crm.inbox import bubbles
    from crm.inbox import services as inbox
    from crm.inbox.models import Message
    from crm.leads.phones import for_humans

    message = db.session.get(Message, int(event.get("message_id", 0)))
    if message is None or message.workspace_id != workspace_id:
        return None  # never another workspace's data, whatever the event says
    if event["type"] == "message.status":
        return bubbles.bubble(message, oob=True)
    conversation = inbox.get_conversation(workspace_id, message.conversation_id)
    item = render_template(
        "inbox/_conversation_item.html", conversation=conversation, preview=message, for_humans=for_humans
    )
    bubble = bubbles.bubble(message)
    html = (
        '<div id="conversations-empty" hx-swap-oob="delete"></div>'
        f'<div id="conversation-{conversation.id}" hx-swap-oob="delete"></div>'
        f'<ul hx-swap-oob="afterbegin:#conversations">{item}</ul>'
        f'<div hx-swap-oob="beforeend:#messages-{conversation.id}">{bubble}</div>'
    )
    if message.author == "agent" and message.direction == "out" and _ai_on(workspace_id):
        # A person replied: the bot stopped in this conversation, and its switch says so.
        html += _thread_header(workspace_id, conversation, ai_on=True)
    return html


def _ai_on(workspace_id: int) -> bool:
    from crm.inbox.team import team_facts

    return team_facts(workspace_id).ai_on


def _thread_header(workspace_id: int, conversation: Conversation, *, ai_on: bool) -> str:
    from crm.inbox import services as inbox
    from crm.leads.phones import for_humans

    return render_template(
        "inbox/_thread_header.html",
        conversation=conversation,
        for_humans=for_humans,
        members=inbox.assignable_members(workspace_id),
        ai_on=ai_on,
        oob=True,
    )


def _conversation_fragments(workspace_id: int, conversation_id: int) -> str:
    from crm.inbox import listing
    from crm.inbox import services as inbox
    from crm.leads.phones import for_humans

    conversation = inbox.get_conversation(workspace_id, conversation_id)
    preview = listing.last_messages(workspace_id, [conversation.id]).get(conversation.id)
    item = render_template(
        "inbox/_conversation_item.html",
        conversation=conversation,
        preview=preview,
        for_humans=for_humans,
        oob="true",
    )
    return item + _thread_header(workspace_id, conversation, ai_on=_ai_on(workspace_id))


def _handoff_notice(workspace_id: int, event: Event) -> str:
    """The bot handed a conversation to the team: a notice in every open inbox."""
    from crm.inbox import services as inbox
    from crm.leads.phones import for_humans

    conversation = inbox.get_conversation(workspace_id, int(event["conversation_id"]))
    lead = conversation.lead
    notice = render_template(
        "inbox/_handoff_notice.html",
        conversation=conversation,
        name=lead.name or for_humans(lead.phone) or lead.bsuid or "",
        by=str(event.get("by") or "keyword"),
        notice_id=str(event.get("eid") or uuid.uuid4().hex)[:16],
    )
    return f'<div hx-swap-oob="beforeend:#notices">{notice}</div>'


def other_viewers(workspace_id: int, conversation_id: int, user_id: int) -> list[str]:
    """The names of the other agents looking at this conversation right now."""
    from crm.inbox.services import member_names
    from crm.realtime import presence

    others = presence.viewers(workspace_id, conversation_id) - {user_id}
    return sorted(member_names(workspace_id, others).values(), key=str.lower)


def viewers_fragment(workspace_id: int, conversation_id: int, user_id: int, *, oob: bool = False) -> str:
    names = other_viewers(workspace_id, conversation_id, user_id)
    return render_template("inbox/_viewers.html", conversation_id=conversation_id, names=names, oob=oob)


def _broadcast_fragments(workspace_id: int, event: Event) -> str | None:
    """A broadcast's progress (every tick) and its state (when its status changed), read once per
    event in this process whatever the number of languages and tabs (``shared_snapshot``). The
    same for every member: the owner-and-admin buttons are shown by the page's CSS."""
    from crm.broadcasts.progress import shared_snapshot

    broadcast_id = broadcast_of(event)
    if broadcast_id is None:
        return None
    progress = shared_snapshot(workspace_id, broadcast_id, str(event.get("eid") or ""))
    html = render_template("broadcasts/_progress.html", progress=progress, oob=True)
    if event.get("type") == "broadcast.changed":
        html = render_template("broadcasts/_state.html", progress=progress, oob=True, error="") + html
    return html


def render_event(workspace_id: int, event: Event, *, manager: bool, user_id: int) -> str | None:
    kind = str(event.get("type", ""))
    if kind in BROADCAST_KINDS:
        try:
            return _broadcast_fragments(workspace_id, event)
        except DomainError:  # deleted meanwhile, or not this workspace's
            return None
    if kind == "presence.changed":
        try:
            return viewers_fragment(workspace_id, int(event["conversation_id"]), user_id, oob=True)
        except (KeyError, ValueError, TypeError):
            return None
    if kind == "note.created":
        from crm.extensions import db
        from crm.inbox.models import ConversationNote
        from crm.inbox.notes import note_author_names

        note = db.session.get(ConversationNote, int(event.get("note_id", 0)))
        if note is None or note.workspace_id != workspace_id:
            return None
        authors = note_author_names(workspace_id, [note])
        html = render_template("inbox/_note.html", note=note, note_authors=authors)
        return f'<div hx-swap-oob="beforeend:#notes-{note.conversation_id}">{html}</div>'
    if kind == "conversation.handoff":
        try:
            return _handoff_notice(workspace_id, event)
        except (DomainError, KeyError, ValueError, TypeError):
            return None
    if kind == "conversation.updated":
        try:
            return _conversation_fragments(workspace_id, int(event["conversation_id"]))
        except (DomainError, KeyError, ValueError, TypeError):
            return None
    if kind == "message.deleted":
        try:
            return f'<div id="message-{int(event["message_id"])}" hx-swap-oob="delete"></div>'
        except (KeyError, ValueError, TypeError):
            return None
    if kind in ("message.created", "message.status"):
        try:
            return _message_fragments(workspace_id, event)
        except (DomainError, KeyError, ValueError, TypeError):
            return None
    if kind.startswith("webqr.") and manager:
        from crm.whatsapp import webqr

        try:
            view = webqr.pairing_view(workspace_id, int(event["account_id"]))
        except (DomainError, KeyError, ValueError):
            return None
        return render_template("settings/_webqr_panel.html", oob=True, **view)
    return None


# A WebQR panel is the same for every manager's tab of the workspace (per language): rendered once
# per process and event, however many sockets render it on their own threads. (Events every tab
# sees alike are rendered once per language by the fan-out thread: crm/realtime/fanout.py.)
SHARED_SECONDS = 30.0
_shared: dict[tuple[str, ...], tuple[float, threading.Event, list[str | None]]] = {}
_shared_lock = threading.Lock()


def render_for_socket(
    workspace_id: int,
    event: Event,
    *,
    manager: bool,
    user_id: int,
    prepare: Callable[[], None] = lambda: None,
) -> str | None:
    """The fragment for one socket; ``prepare`` (loading what the templates' context needs) runs
    only when this socket really renders, not when it reuses another's rendering."""
    from flask_babel import get_locale

    def render() -> str | None:
        prepare()
        return render_event(workspace_id, event, manager=manager, user_id=user_id)

    kind, eid = str(event.get("type", "")), event.get("eid")
    if not isinstance(eid, str) or not kind.startswith("webqr."):
        return render()
    key = (str(workspace_id), eid, str(get_locale()), str(manager))
    now = time.monotonic()
    with _shared_lock:
        entry = _shared.get(key)
        mine = entry is None
        if mine:
            entry = _shared[key] = (now + SHARED_SECONDS, threading.Event(), [])
            if len(_shared) > 2000:
                for stale in [
                    k for k, (expires, done, _) in _shared.items() if expires < now and done.is_set()
                ]:
                    del _shared[stale]
    assert entry is not None
    _expires, done, result = entry
    if mine:
        try:
            result.append(render())
        finally:
            done.set()
    elif not done.wait(5.0) or not result:
        return render()
    return result[0]
