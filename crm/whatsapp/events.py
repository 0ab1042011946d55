"""Provider-neutral events: what any WhatsApp provider (Cloud API, WebQR, sandbox) reports.

Parsers turn each provider's payloads into these; the ingest service only ever sees these.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Direction = Literal["in", "out"]


@dataclass(frozen=True)
class MediaRef:
    """A media attachment as the provider describes it (downloaded later by a task)."""

    provider_media_id: str | None = None
    mime_type: str | None = None
    sha256: str | None = None
    filename: str | None = None
    url: str | None = None
    voice: bool = False
    animated: bool = False
    # WebQR: the media message itself (base64 protobuf), whose keys download and decrypt the file.
    # Never stored in clear: ingest keeps it encrypted with the media row.
    wire: str | None = dataclasses.field(default=None, repr=False)

    def described(self) -> dict[str, Any]:
        """What the message row keeps about its media (no keys)."""
        return {k: v for k, v in vars(self).items() if k != "wire"}


@dataclass(frozen=True)
class InboundMessage:
    """One message that reached (or, for echoes, left from) the business number.

    ``phone`` is E.164 (``+<wa_id>``) when the provider gave a phone; ``bsuid`` is the
    business-scoped user id when given. At least one of them identifies the customer.
    """

    provider_message_id: str
    type: str  # text, image, video, audio, document, sticker, location, contacts, reaction, button,
    # interactive, order, system, unsupported, revoke, edit, ...
    text: str  # what to show in a thread: body, caption, choice title, a summary for other types
    timestamp: datetime
    phone: str | None = None
    bsuid: str | None = None
    parent_bsuid: str | None = None
    username: str | None = None
    name: str | None = None  # the customer's WhatsApp profile name
    direction: Direction = "in"  # "out" for echoes of messages sent from the business's own phone
    media: MediaRef | None = None
    reply_to: str | None = None  # provider id of the message this one answers or reacts to
    phone_number_id: str | None = None  # the business number it arrived on (Cloud API metadata)
    group_jid: str | None = None  # WebQR group messages
    error_code: str | None = None
    error_title: str | None = None
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class StatusUpdate:
    """A delivery status for a message the business sent."""

    provider_message_id: str
    status: str  # sent, delivered, read, played, failed (others are kept as given)
    timestamp: datetime
    recipient_phone: str | None = None
    recipient_bsuid: str | None = None
    error_code: str | None = None
    error_title: str | None = None
    phone_number_id: str | None = None


@dataclass(frozen=True)
class AccountSignal:
    """Something about the number itself: quality, restrictions, bans, template reviews..."""

    field: str  # the webhook field, e.g. account_update, phone_number_quality_update
    event: str  # e.g. ACCOUNT_RESTRICTION, FLAGGED, APPROVED; "" when the payload has none
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)
    phone_number_id: str | None = None


@dataclass
class ParsedWebhook:
    messages: list[InboundMessage] = dataclasses.field(default_factory=list)
    statuses: list[StatusUpdate] = dataclasses.field(default_factory=list)
    signals: list[AccountSignal] = dataclasses.field(default_factory=list)
    # Parts we understood but don't act on, or could not read: (field or path, reason), for logs.
    ignored: list[tuple[str, str]] = dataclasses.field(default_factory=list)
