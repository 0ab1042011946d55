"""What a Cloud API message says: display text, media and the message it points at, per type.

Pure helpers for :mod:`crm.whatsapp.cloud_parser`. Every function accepts any JSON value and
never raises: a missing or oddly typed part simply contributes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from crm.whatsapp.events import MediaRef

MEDIA_TYPES = frozenset({"image", "video", "document", "audio", "sticker"})


@dataclass(frozen=True)
class Content:
    text: str = ""
    media: MediaRef | None = None
    reply_to: str | None = None  # set only by types that point at another message


def as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: object) -> str | None:
    """A non-empty string, or an integer id written as a string; anything else is None."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def text_of(value: object) -> str:
    return value if isinstance(value, str) else ""


def message_content(msg: dict[str, Any]) -> Content:
    """The display content of one item of ``messages`` / ``message_echoes`` (or an edit's body)."""
    kind = msg.get("type")
    if not isinstance(kind, str):
        return Content()
    body = msg.get(kind)
    if kind in MEDIA_TYPES:
        return _media(kind, body)
    reader = _READERS.get(kind)
    return reader(body) if reader else Content()


def _media(kind: str, body: object) -> Content:
    if not isinstance(body, dict):
        return Content()
    ref = MediaRef(
        provider_media_id=as_str(body.get("id")),
        mime_type=as_str(body.get("mime_type")),
        sha256=as_str(body.get("sha256")),
        filename=as_str(body.get("filename")) if kind == "document" else None,
        url=as_str(body.get("url")),
        voice=body.get("voice") is True,
        animated=body.get("animated") is True,
    )
    return Content(text=text_of(body.get("caption")), media=ref)


def _text(body: object) -> Content:
    return Content(text=text_of(as_dict(body).get("body")))


def _coordinate(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return as_str(value)


def _location(body: object) -> Content:
    loc = as_dict(body)
    parts = [p for p in (as_str(loc.get("name")), as_str(loc.get("address"))) if p]
    lat, lng = _coordinate(loc.get("latitude")), _coordinate(loc.get("longitude"))
    if lat and lng:
        parts.append(f"{lat}, {lng}")
    if not parts and (url := as_str(loc.get("url"))):
        parts.append(url)
    return Content(text=" — ".join(parts))


def _contact_name(card: object) -> str | None:
    card = as_dict(card)
    name = as_dict(card.get("name"))
    formatted = as_str(name.get("formatted_name"))
    if formatted:
        return formatted
    joined = " ".join(p for p in (as_str(name.get("first_name")), as_str(name.get("last_name"))) if p)
    if joined:
        return joined
    phones = as_list(card.get("phones"))
    return as_str(as_dict(phones[0]).get("phone")) if phones else None


def _contacts(body: object) -> Content:
    names = [n for n in (_contact_name(card) for card in as_list(body)) if n]
    return Content(text=", ".join(names))


def _reaction(body: object) -> Content:
    reaction = as_dict(body)
    return Content(text=text_of(reaction.get("emoji")), reply_to=as_str(reaction.get("message_id")))


def _button(body: object) -> Content:
    return Content(text=text_of(as_dict(body).get("text")))


def _interactive(body: object) -> Content:
    inter = as_dict(body)
    kind = inter.get("type")
    choice = as_dict(inter.get(kind)) if isinstance(kind, str) else {}
    if kind in ("button_reply", "list_reply"):
        title = text_of(choice.get("title"))
        description = as_str(choice.get("description"))
        return Content(text=f"{title} — {description}" if description else title)
    if kind == "nfm_reply":
        return Content(text=as_str(choice.get("body")) or "Flow response")
    if kind == "call_permission_reply":
        return Content(text=text_of(choice.get("response")))
    return Content()


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _order(body: object) -> Content:
    order = as_dict(body)
    items = [as_dict(item) for item in as_list(order.get("product_items"))]
    text = f"Order: {len(items)} item{'' if len(items) == 1 else 's'}"
    total = _order_total(items)
    if total:
        text += f", total {total}"
    if note := as_str(order.get("text")):
        text += f" — {note}"
    return Content(text=text)


def _order_total(items: list[dict[str, Any]]) -> str | None:
    """``"180 ILS"`` when every item has a quantity, a price and the same currency."""
    currencies = {as_str(item.get("currency")) for item in items}
    if not items or len(currencies) != 1:
        return None
    currency = currencies.pop()
    total = 0.0
    for item in items:
        quantity, price = _number(item.get("quantity")), _number(item.get("item_price"))
        if quantity is None or price is None:
            return None
        total += quantity * price
    if not currency or not math.isfinite(total):
        return None
    amount = str(int(total)) if total.is_integer() else f"{total:.2f}"
    return f"{amount} {currency}"


def _revoke(body: object) -> Content:
    return Content(reply_to=as_str(as_dict(body).get("original_message_id")))


def _edit(body: object) -> Content:
    edit = as_dict(body)
    inner = as_dict(edit.get("message"))
    # One level only: an edit of an edit is not a shape Meta sends, and must not recurse.
    inner_content = message_content(inner) if inner.get("type") != "edit" else Content()
    return Content(
        text=inner_content.text,
        media=inner_content.media,
        reply_to=as_str(edit.get("original_message_id")),
    )


_READERS = {
    "text": _text,
    "system": _text,
    "location": _location,
    "contacts": _contacts,
    "reaction": _reaction,
    "button": _button,
    "interactive": _interactive,
    "order": _order,
    "revoke": _revoke,
    "edit": _edit,
}
