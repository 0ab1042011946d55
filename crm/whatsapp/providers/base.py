"""The provider interface, the outcome of a send, and the typed errors every provider raises.

Errors say what to do, not only what happened: retry later (and when), fail this message
(and why), or stop using the number until a person looks at it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from crm.whatsapp.models import WhatsAppAccount


@dataclass(frozen=True)
class OutboundMedia:
    """A prepared file to send: its bytes are read only when the provider needs them."""

    kind: str  # image | audio | video | document | sticker
    mime_type: str
    filename: str | None
    size: int
    load: Callable[[], bytes] = field(repr=False, compare=False)  # whole, for clients that need bytes
    # The file as a readable stream, for clients that can stream it (a 100 MB document is never
    # held in memory whole).
    open: Callable[[], AbstractContextManager[IO[bytes]]] | None = field(
        default=None, repr=False, compare=False
    )
    voice: bool = False
    width: int | None = None
    height: int | None = None
    uploaded_id: str | None = None  # the provider already has this file (Cloud API media id)


@dataclass(frozen=True)
class OutboundRequest:
    """What to send, provider-neutral. ``to`` is E.164 (or a BSUID for BSUID-only customers)."""

    to: str
    type: str = "text"  # text | image | document | audio | video | template
    text: str = ""
    payload: dict[str, Any] = field(default_factory=dict)  # media link/id, caption, filename, template...
    reply_to: str | None = None
    recipient_bsuid: str | None = None
    media: OutboundMedia | None = None


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str
    status: str = "sent"
    # The provider's id for the file uploaded with this message (Cloud API): the next message with
    # the same file on the same number names it instead of uploading the file again.
    uploaded_media_id: str | None = None


class ErrorAction(enum.StrEnum):
    RETRY = "retry"  # transient: try again after ``retry_after``
    FAIL = "fail"  # this message can't go (outside the 24 h window, undeliverable, bad request)
    ACCOUNT_DOWN = "account_down"  # the number can't send now: mark it, route elsewhere


class ProviderError(Exception):
    """A provider refused or failed a call. ``code`` and ``title`` are shown to people."""

    def __init__(
        self,
        code: str,
        title: str,
        *,
        action: ErrorAction,
        retry_after: float | None = None,
        health: str | None = None,  # for ACCOUNT_DOWN and warnings: the number's new health
        pause_account_for: float | None = None,  # slow the whole number down (throughput limits)
        needs_template: bool = False,
    ):
        super().__init__(f"{code}: {title}")
        self.code = code
        self.title = title
        self.action = action
        self.retry_after = retry_after
        self.health = health
        self.pause_account_for = pause_account_for
        self.needs_template = needs_template


class Provider(Protocol):
    name: str

    def send(self, account: WhatsAppAccount, request: OutboundRequest) -> SendResult:
        """Send one message; raise ProviderError. Never called inside a web request."""
        ...

    def default_limits(self, account: WhatsAppAccount) -> tuple[int | None, int | None]:
        """(per second, per minute) when the account sets no cap of its own; None = no limit."""
        ...
