"""WebQR numbers (WhatsApp Web protocol). Their sends are carried by the gateway process, which
owns the sessions; a worker never talks to WhatsApp Web itself."""

from __future__ import annotations

from crm.whatsapp.models import WhatsAppAccount
from crm.whatsapp.providers.base import ErrorAction, OutboundRequest, ProviderError, SendResult


class WebQRProvider:
    name = "webqr"

    def send(self, account: WhatsAppAccount, request: OutboundRequest) -> SendResult:
        raise ProviderError(
            "webqr_gateway",
            "WebQR messages are sent by the gateway process",
            action=ErrorAction.RETRY,
            retry_after=30,
        )

    def default_limits(self, account: WhatsAppAccount) -> tuple[int | None, int | None]:
        return None, 10  # conservative: numbers that look automated get banned
