"""The sandbox number: a simulated WhatsApp number so the whole product runs without WhatsApp.

Sends succeed at once and count as delivered to the simulated phone; the settings page has a
"customer phone" simulator whose messages go through the same ingest path as real providers.
"""

from __future__ import annotations

import uuid

from crm.whatsapp.models import WhatsAppAccount
from crm.whatsapp.providers.base import OutboundRequest, SendResult


class SandboxProvider:
    name = "sandbox"

    def send(self, account: WhatsAppAccount, request: OutboundRequest) -> SendResult:
        return SendResult(provider_message_id=f"sandbox.{uuid.uuid4().hex}", status="delivered")

    def default_limits(self, account: WhatsAppAccount) -> tuple[int | None, int | None]:
        return None, None


def new_inbound_id() -> str:
    return f"sandbox.in.{uuid.uuid4().hex}"
