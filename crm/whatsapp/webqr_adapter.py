"""neonize (whatsmeow) events → our provider-neutral events. Pure functions over neonize's
protobuf objects, so a neonize upgrade that renames something fails the adapter tests."""

from __future__ import annotations

import base64
import io
import logging
import os
import warnings
from datetime import UTC, datetime
from typing import Any

from crm.whatsapp.events import InboundMessage, MediaRef

log = logging.getLogger(__name__)

PERSON_SERVER = "s.whatsapp.net"
GROUP_SERVER = "g.us"
RECEIPT_STATUS = {"DELIVERED": "delivered", "READ": "read", "PLAYED": "played"}


def load_neonize() -> Any:
    """The neonize modules, or an ImportError/OSError the caller turns into "WebQR disabled".

    neonize probes the platform at import with ``os.popen("uname -a").read()`` and never closes
    the pipe; the orphaned process is reaped (and the file warned about) much later. The import
    runs with an ``os.popen`` that reads and closes at once.
    """
    original = os.popen

    def closing_popen(cmd: str, mode: str = "r", buffering: int = -1) -> Any:
        with original(cmd, mode, buffering) as pipe:
            return io.StringIO(pipe.read())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.popen = closing_popen
        try:
            import neonize.client
            import neonize.events
            import neonize.exc
            import neonize.proto.waE2E.WAWebProtobufsE2E_pb2
            import neonize.utils.enum
            import neonize.utils.jid
        finally:
            os.popen = original
    return neonize


def _timestamp(value: int) -> datetime:
    # whatsmeow reports seconds; some builds report milliseconds.
    seconds = value / 1000 if value > 10**11 else value
    try:
        return datetime.fromtimestamp(seconds, UTC) if seconds > 0 else datetime.now(UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.now(UTC)


def _text_and_type(message: Any) -> tuple[str, str, MediaRef | None]:
    """The display text, our type name and a media reference of a waE2E Message."""
    if message.conversation:
        return message.conversation, "text", None
    if message.HasField("extendedTextMessage"):
        return message.extendedTextMessage.text, "text", None
    for field, kind in (
        ("imageMessage", "image"),
        ("videoMessage", "video"),
        ("audioMessage", "audio"),
        ("documentMessage", "document"),
        ("stickerMessage", "sticker"),
    ):
        if message.HasField(field):
            media = getattr(message, field)
            caption = getattr(media, "caption", "") or ""
            only_media = type(message)()
            getattr(only_media, field).CopyFrom(media)
            ref = MediaRef(
                mime_type=getattr(media, "mimetype", None) or None,
                filename=getattr(media, "fileName", None) or None,
                voice=bool(getattr(media, "PTT", False)),
                wire=base64.b64encode(only_media.SerializeToString()).decode(),
            )
            return caption, kind, ref
    if message.HasField("locationMessage"):
        loc = message.locationMessage
        name = ", ".join(p for p in (loc.name, loc.address) if p)
        return f"{name} ({loc.degreesLatitude}, {loc.degreesLongitude})".strip(), "location", None
    if message.HasField("reactionMessage"):
        return message.reactionMessage.text, "reaction", None
    if message.HasField("contactMessage"):
        return message.contactMessage.displayName, "contacts", None
    return "", "unsupported", None


def inbound_from_message_event(event: Any) -> InboundMessage | None:
    """A MessageEv as an inbound (or, when sent from the phone itself, outbound echo) message."""
    info = event.Info
    source = info.MessageSource
    chat, sender = source.Chat, source.Sender
    is_group = bool(source.IsGroup) or chat.Server == GROUP_SERVER
    if chat.Server not in (PERSON_SERVER, GROUP_SERVER, "lid"):
        return None  # status broadcasts, newsletters: not conversations
    person = sender if is_group else chat
    if person.Server == "lid":
        # LID addressing: the person's phone number, when WhatsApp shares it, is in the Alt JID.
        alt = source.SenderAlt if (is_group or not source.IsFromMe) else source.RecipientAlt
        if alt.User.isdigit() and alt.Server == PERSON_SERVER:
            person = alt
    text, kind, media = _text_and_type(event.Message)
    phone = f"+{person.User}" if person.User.isdigit() and person.Server == PERSON_SERVER else None
    return InboundMessage(
        provider_message_id=info.ID,
        type=kind,
        text=text,
        timestamp=_timestamp(info.Timestamp),
        phone=phone,
        bsuid=None if phone else f"{person.User}@{person.Server}",
        name=info.Pushname or None,
        direction="out" if source.IsFromMe else "in",
        media=media,
        group_jid=f"{chat.User}@{chat.Server}" if is_group else None,
    )


def receipt_status(event: Any) -> str | None:
    name = type(event).ReceiptType.Name(event.Type) if hasattr(type(event), "ReceiptType") else ""
    return RECEIPT_STATUS.get(name)


def group_rows(groups: Any, me_user: str | None) -> list[tuple[str, str, int, bool]]:
    rows = []
    for group in groups:
        jid = f"{group.JID.User}@{group.JID.Server}"
        is_admin = any(p.JID.User == me_user and (p.IsAdmin or p.IsSuperAdmin) for p in group.Participants)
        rows.append((jid, group.GroupName.Name, len(group.Participants), is_admin))
    return rows
