"""Message bubbles and conversation-list rows rendered once and remembered: a thread page is 50
bubbles and a list page 50 rows, and agents open the same conversations again and again while
they rarely change.

A bubble is remembered under everything it is made of: every column of the message and of its
file, the reader's language and time zone, the URL prefix and whether it is an out-of-band swap.
A new status, a downloaded file or an edited text is a different key, so a remembered bubble is
never stale; old keys simply age out of a bounded least-recently-used map (per process).
tests/inbox/test_bubbles.py changes each column in turn to prove the key covers what the
template shows.
"""

from __future__ import annotations

import json
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from flask import current_app, request
from markupsafe import Markup
from sqlalchemy import ARRAY, JSON, TypeDecorator
from sqlalchemy.types import TypeEngine

from crm.i18n_fast import N_, gettext, reader_key
from crm.inbox.models import Message
from crm.leads.phones import for_humans

MAX_BUBBLES = 20_000  # per process: ~1 KB each
_bubbles: OrderedDict[tuple[Any, ...], Markup] = OrderedDict()
_lock = threading.Lock()


# Per mapped class: reads every column at once, and the positions of its JSON columns.
_readers: dict[type, tuple[Callable[[Any], tuple[Any, ...]], tuple[int, ...]]] = {}


def _holds_json(column_type: TypeEngine[Any]) -> bool:
    """Whether a column's values can be dicts or lists (which don't hash): JSON, an array, or a
    type built on one of them."""
    impl = column_type.impl_instance if isinstance(column_type, TypeDecorator) else column_type
    return isinstance(impl, JSON | ARRAY)


def _row(obj: Any) -> tuple[Any, ...]:
    """Every column of the row, JSON values as sorted text (so that they hash and compare)."""
    reader = _readers.get(type(obj))
    if reader is None:
        columns = list(obj.__table__.columns)
        json_columns = tuple(n for n, c in enumerate(columns) if _holds_json(c.type))
        reader = _readers[type(obj)] = (operator.attrgetter(*(c.key for c in columns)), json_columns)
    read, json_columns = reader
    values = read(obj)
    if any(isinstance(values[n], dict | list) for n in json_columns):
        return tuple(
            json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else value
            for value in values
        )
    return values


def _message_rows(message: Message) -> tuple[tuple[Any, ...], tuple[Any, ...] | None]:
    media = message.media_file if message.media_file_id is not None else None
    return _row(message), _row(media) if media is not None else None


def _remembered(key: tuple[Any, ...], template_name: str, **context: Any) -> Markup:
    with _lock:
        found = _bubbles.get(key)
        if found is not None:
            _bubbles.move_to_end(key)
            return found
    template = current_app.jinja_env.get_template(template_name)
    html = Markup(template.render(**context))  # noqa: S704 (an autoescaped .html template)
    with _lock:
        _bubbles[key] = html
        while len(_bubbles) > MAX_BUBBLES:
            _bubbles.popitem(last=False)
    return html


# Texts every bubble shows alike, looked up once per language (a template's gettext call costs
# more than the rest of a short bubble).
BUBBLE_TEXTS = {
    "delete": N_("Delete from Zapdesk"),
    "confirm_delete": N_("Delete this message and its file from Zapdesk? The customer keeps their copy."),
}
_texts: dict[str, dict[str, str]] = {}


def bubble_texts() -> dict[str, str]:
    """``BUBBLE_TEXTS`` in the current request's language, remembered per language."""
    language = reader_key()[0]
    found = _texts.get(language)
    if found is None:
        found = _texts[language] = {name: gettext(text) for name, text in BUBBLE_TEXTS.items()}
    return found


def bubbles(messages: Iterable[Message], oob: bool = False) -> Markup:
    """The bubbles of ``inbox/_message.html`` for these messages, each from memory when nothing
    changed; what the request adds to each key (language, zone, URL prefix) is read once."""
    prefix = ("message", reader_key(), request.script_root, oob)
    texts = bubble_texts()
    return Markup("").join(
        _remembered(
            (*prefix, *_message_rows(message)), "inbox/_message.html", message=message, oob=oob, texts=texts
        )
        for message in messages
    )


def bubble(message: Message, oob: bool = False) -> Markup:
    """One message's bubble, as ``bubbles`` makes it."""
    return bubbles((message,), oob)


# What a row of the conversation list shows (inbox/_conversation_item.html), by object; the
# tests read the template and fail if it starts showing anything else.
ROW_FIELDS = {
    "conversation": ("id", "unread_count", "account_id", "status", "assignee_id", "last_message_at"),
    "lead": ("name", "phone", "bsuid", "kind", "is_group", "tags"),
    "preview": ("text", "type", "direction", "author"),
}


def conversation_row(conversation: Any, preview: Message | None, selected: int | None = None) -> Markup:
    """One row of the conversation list (50 per page), from memory while its conversation, lead,
    tags and last message show the same to a reader of the same language and zone."""
    lead = conversation.lead
    key = (
        "conversation",
        reader_key(),
        request.script_root,
        selected == conversation.id,
        tuple(getattr(conversation, name) for name in ROW_FIELDS["conversation"]),
        (lead.name, lead.phone, lead.bsuid, lead.kind, tuple(tag.key for tag in lead.tags)),
        tuple(getattr(preview, name) for name in ROW_FIELDS["preview"]) if preview is not None else None,
    )
    return _remembered(
        key,
        "inbox/_conversation_item.html",
        conversation=conversation,
        preview=preview,
        selected=selected,
        for_humans=for_humans,
    )


def forget_all() -> None:
    with _lock:
        _bubbles.clear()
    _texts.clear()
