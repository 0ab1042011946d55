"""WhatsApp Cloud API webhook bodies → provider-neutral events.

``parse_cloud_webhook`` is pure (no Flask, no database) and never raises: Meta's payload family
is wide and grows, so any part it cannot read is recorded in ``ParsedWebhook.ignored`` as
``(path, reason)`` and the rest of the body is still read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from crm.whatsapp.cloud_text import as_dict, as_list, as_str, message_content
from crm.whatsapp.events import AccountSignal, Direction, InboundMessage, ParsedWebhook, StatusUpdate

WABA_OBJECT = "whatsapp_business_account"

# Webhook fields about the number, account or templates rather than conversations.
SIGNAL_FIELDS = frozenset(
    {
        "account_alerts",
        "account_review_update",
        "account_update",
        "business_capability_update",
        "calls",
        "flows",
        "message_template_components_update",
        "message_template_quality_update",
        "message_template_status_update",
        "phone_number_name_update",
        "phone_number_quality_update",
        "security",
        "template_category_update",
        "user_preferences",
    }
)


@dataclass(frozen=True)
class _Identity:
    phone: str | None = None
    bsuid: str | None = None
    parent_bsuid: str | None = None
    name: str | None = None
    username: str | None = None


@dataclass(frozen=True)
class _Change:
    """One ``entry[].changes[]`` item whose ``value`` is a dict, plus what every event needs."""

    path: str
    value: dict[str, Any]
    phone_number_id: str | None
    business_phone: str | None  # metadata.display_phone_number as +digits
    contacts: list[dict[str, Any]]


def parse_cloud_webhook(payload: object) -> ParsedWebhook:
    """Read every entry and change of one webhook POST body (already decoded from JSON)."""
    result = ParsedWebhook()
    if not isinstance(payload, dict):
        result.ignored.append(("$", f"payload is {type(payload).__name__}, not an object"))
        return result
    obj = payload.get("object")
    if obj != WABA_OBJECT:
        result.ignored.append(("object", f"object is {obj!r}, not {WABA_OBJECT!r}"))
        return result
    entries = payload.get("entry")
    if not isinstance(entries, list):
        result.ignored.append(("entry", "missing or not a list"))
        return result
    if not entries:
        result.ignored.append(("entry", "empty"))
    for i, entry in enumerate(entries):
        _parse_entry(entry, f"entry[{i}]", result)
    return result


def _parse_entry(entry: object, path: str, result: ParsedWebhook) -> None:
    if not isinstance(entry, dict):
        result.ignored.append((path, "entry is not an object"))
        return
    changes = entry.get("changes")
    if not isinstance(changes, list):
        result.ignored.append((f"{path}.changes", "missing or not a list"))
        return
    if not changes:
        result.ignored.append((f"{path}.changes", "empty"))
    for j, change in enumerate(changes):
        _parse_change(change, f"{path}.changes[{j}]", result)


def _parse_change(change: object, path: str, result: ParsedWebhook) -> None:
    if not isinstance(change, dict):
        result.ignored.append((path, "change is not an object"))
        return
    name = change.get("field")
    if not isinstance(name, str) or not name:
        result.ignored.append((f"{path}.field", "missing or not a string"))
        return
    value = change.get("value")
    if not isinstance(value, dict):
        result.ignored.append((f"{path}.value", f"field {name!r}: value missing or not an object"))
        return
    raw_contacts = value.get("contacts")
    if raw_contacts is not None and not isinstance(raw_contacts, list):
        result.ignored.append((f"{path}.value.contacts", "not a list"))
    metadata = as_dict(value.get("metadata"))
    ctx = _Change(
        path=f"{path}.value",
        value=value,
        phone_number_id=as_str(metadata.get("phone_number_id")),
        business_phone=_phone(as_str(metadata.get("display_phone_number"))),
        contacts=[c for c in as_list(raw_contacts) if isinstance(c, dict)],
    )
    if name == "messages":
        _parse_messages_value(ctx, result)
    elif name == "smb_message_echoes":
        for k, item in _items(ctx, "message_echoes", result):
            _add_message(item, f"{ctx.path}.message_echoes[{k}]", ctx, "out", result)
    elif name in SIGNAL_FIELDS:
        _add_signal(name, ctx, result)
    else:
        result.ignored.append((path, f"field {name!r} is not handled"))


def _items(ctx: _Change, key: str, result: ParsedWebhook) -> list[tuple[int, dict[str, Any]]]:
    """The dict items of ``value[key]``; anything else there is recorded as ignored."""
    raw = ctx.value.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list):
        result.ignored.append((f"{ctx.path}.{key}", "not a list"))
        return []
    items = []
    for k, item in enumerate(raw):
        if isinstance(item, dict):
            items.append((k, item))
        else:
            result.ignored.append((f"{ctx.path}.{key}[{k}]", "item is not an object"))
    return items


def _parse_messages_value(ctx: _Change, result: ParsedWebhook) -> None:
    messages = _items(ctx, "messages", result)
    statuses = _items(ctx, "statuses", result)
    for k, item in messages:
        _add_message(item, f"{ctx.path}.messages[{k}]", ctx, "in", result)
    for k, item in statuses:
        _add_status(item, f"{ctx.path}.statuses[{k}]", ctx, result)
    if not messages and not statuses:
        code, title = _first_error(ctx.value.get("errors"))
        reason = f"error {code}: {title}" if code or title else "no messages or statuses"
        result.ignored.append((ctx.path, reason))


# --- messages and echoes -------------------------------------------------------------------


def _add_message(
    item: dict[str, Any], path: str, ctx: _Change, direction: Direction, result: ParsedWebhook
) -> None:
    msg_id = as_str(item.get("id"))
    if msg_id is None:
        result.ignored.append((f"{path}.id", "message without an id"))
        return
    kind = as_str(item.get("type")) or "unknown"
    content = message_content(item)
    identify = _recipient_identity if direction == "out" else _sender_identity
    who = identify(item, path, ctx, result)
    if who.phone is None and who.bsuid is None:
        result.ignored.append((path, "message has no phone or BSUID; kept without an identity"))
    code, title = _first_error(item.get("errors"))
    if code is None and title is None:
        code, title = _first_error(ctx.value.get("errors"))
    reply_to = content.reply_to or as_str(as_dict(item.get("context")).get("id"))
    result.messages.append(
        InboundMessage(
            provider_message_id=msg_id,
            type=kind,
            text=content.text,
            timestamp=_timestamp(item.get("timestamp"), f"{path}.timestamp", result),
            phone=who.phone,
            bsuid=who.bsuid,
            parent_bsuid=who.parent_bsuid,
            username=who.username,
            name=who.name,
            direction=direction,
            media=content.media,
            reply_to=reply_to,
            phone_number_id=ctx.phone_number_id,
            error_code=code,
            error_title=title,
            raw=item,
        )
    )


def _sender_identity(msg: dict[str, Any], path: str, ctx: _Change, result: ParsedWebhook) -> _Identity:
    """The customer who sent an inbound message (``path`` and ``result`` mirror the echo reader)."""
    sender = as_str(msg.get("from"))
    user_id = as_str(msg.get("from_user_id"))
    contact = _match_contact(ctx.contacts, sender, user_id, allow_single=True)
    profile = as_dict(contact.get("profile"))
    system = as_dict(msg.get("system")) if msg.get("type") == "system" else {}
    bsuid = user_id or as_str(contact.get("user_id")) or as_str(system.get("user_id"))
    parent = (
        as_str(msg.get("from_parent_user_id"))
        or as_str(contact.get("parent_user_id"))
        or as_str(system.get("parent_user_id"))
    )
    phone = _phone(sender) or _phone(as_str(contact.get("wa_id")))
    if phone is None and bsuid is None and sender:
        bsuid = sender  # a non-numeric sender (e.g. a doc placeholder) still identifies someone
    return _Identity(phone, bsuid, parent, as_str(profile.get("name")), as_str(profile.get("username")))


def _recipient_identity(echo: dict[str, Any], path: str, ctx: _Change, result: ParsedWebhook) -> _Identity:
    """For ``smb_message_echoes`` the customer is whoever the business wrote *to*."""
    to = as_str(echo.get("to"))
    sender = as_str(echo.get("from"))
    if (
        ctx.business_phone
        and _phone(to) == ctx.business_phone
        and _phone(sender) not in (None, ctx.business_phone)
    ):
        # An echo is never addressed to the business itself; some samples swap from/to.
        result.ignored.append(
            (f"{path}.to", "echo addressed to the business number; customer taken from 'from'")
        )
        to = sender
    user_id = as_str(echo.get("to_user_id"))
    contact = _match_contact(ctx.contacts, to, user_id, allow_single=False)
    profile = as_dict(contact.get("profile"))
    bsuid = user_id or as_str(contact.get("user_id"))
    parent = as_str(echo.get("to_parent_user_id")) or as_str(contact.get("parent_user_id"))
    phone = _phone(to) or _phone(as_str(contact.get("wa_id")))
    if phone is None and bsuid is None and to:
        bsuid = to
    return _Identity(phone, bsuid, parent, as_str(profile.get("name")), as_str(profile.get("username")))


def _match_contact(
    contacts: list[dict[str, Any]], wa_id: str | None, user_id: str | None, *, allow_single: bool
) -> dict[str, Any]:
    """The contact naming this wa_id or user_id; else the only contact, unless it names someone else."""
    for contact in contacts:
        if (wa_id and as_str(contact.get("wa_id")) == wa_id) or (
            user_id and as_str(contact.get("user_id")) == user_id
        ):
            return contact
    if allow_single and len(contacts) == 1:
        only = contacts[0]
        # No explicit match above, so two present phones (or user ids) here differ.
        phones_differ = _phone(wa_id) and _phone(as_str(only.get("wa_id")))
        users_differ = user_id and as_str(only.get("user_id"))
        if not phones_differ and not users_differ:
            return only
    return {}


def _phone(value: str | None) -> str | None:
    """``+<digits>`` when the value is made only of ASCII digits (a wa_id is authoritative)."""
    if value and value.isascii() and value.isdigit():
        return f"+{value}"
    return None


# --- statuses, signals, shared readers ------------------------------------------------------


def _add_status(item: dict[str, Any], path: str, ctx: _Change, result: ParsedWebhook) -> None:
    if item.get("type") == "call":
        result.ignored.append((path, "call status, not a message status"))
        return
    msg_id = as_str(item.get("id"))
    status = item.get("status")
    if msg_id is None or not isinstance(status, str) or not status:
        result.ignored.append((path, "status without an id or a status"))
        return
    recipient = as_str(item.get("recipient_id"))
    contact = _match_contact(ctx.contacts, recipient, None, allow_single=False)
    bsuid = (
        as_str(item.get("recipient_user_id"))
        or as_str(item.get("recipient_participant_user_id"))
        or as_str(contact.get("user_id"))
    )
    code, title = _first_error(item.get("errors"))
    result.statuses.append(
        StatusUpdate(
            provider_message_id=msg_id,
            status=status.lower(),
            timestamp=_timestamp(item.get("timestamp"), f"{path}.timestamp", result),
            recipient_phone=_phone(recipient),
            recipient_bsuid=bsuid,
            error_code=code,
            error_title=title,
            phone_number_id=ctx.phone_number_id,
        )
    )


def _add_signal(name: str, ctx: _Change, result: ParsedWebhook) -> None:
    event = as_str(ctx.value.get("event")) or as_str(ctx.value.get("current_limit")) or ""
    result.signals.append(
        AccountSignal(field=name, event=event, detail=ctx.value, phone_number_id=ctx.phone_number_id)
    )
    if name == "calls":
        for k, _item in _items(ctx, "statuses", result):
            result.ignored.append((f"{ctx.path}.statuses[{k}]", "call status, not a message status"))


def _first_error(errors: object) -> tuple[str | None, str | None]:
    """(code as str, title or else message) of the first item of an ``errors`` list."""
    items = as_list(errors)
    if not items:
        return None, None
    first = as_dict(items[0])
    code = as_str(first.get("code"))
    title = as_str(first.get("title")) or as_str(first.get("message"))
    return code, title


def _timestamp(value: object, path: str, result: ParsedWebhook) -> datetime:
    """Unix seconds (string or number) as an aware UTC datetime; now, noted as ignored, if unreadable."""
    try:
        if isinstance(value, str) and value.strip().isdigit():
            return datetime.fromtimestamp(int(value.strip()), tz=UTC)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):  # out of range, NaN, or too many digits
        pass
    shown = repr(value[:40]) if isinstance(value, str) else type(value).__name__
    result.ignored.append((path, f"timestamp {shown} unreadable; used now"))
    return datetime.now(UTC)
