"""Providers by name. A new provider is one module and one line here."""

from __future__ import annotations

from crm.errors import ValidationFailed
from crm.whatsapp.providers.base import Provider


def get_provider(name: str) -> Provider:
    from crm.whatsapp.providers.cloud import CloudProvider
    from crm.whatsapp.providers.sandbox import SandboxProvider
    from crm.whatsapp.providers.webqr import WebQRProvider

    providers: dict[str, Provider] = {
        "sandbox": SandboxProvider(),
        "cloud": CloudProvider(),
        "webqr": WebQRProvider(),
    }
    try:
        return providers[name]
    except KeyError:
        raise ValidationFailed(f"Unknown provider: {name}", code="unknown_provider") from None


PROVIDER_NAMES = ("sandbox", "cloud", "webqr")
