"""Providers by name. A new provider is one module and one line here."""

from __future__ import annotations

import functools

from crm.errors import ValidationFailed
from crm.whatsapp.providers.base import Provider

PROVIDER_NAMES = ("sandbox", "cloud", "webqr")


@functools.cache
def _providers() -> dict[str, Provider]:
    # Imported on first use: provider modules import the models, which import this package.
    from crm.whatsapp.providers.cloud import CloudProvider
    from crm.whatsapp.providers.sandbox import SandboxProvider
    from crm.whatsapp.providers.webqr import WebQRProvider

    return {"sandbox": SandboxProvider(), "cloud": CloudProvider(), "webqr": WebQRProvider()}


def get_provider(name: str) -> Provider:
    """The provider for ``name`` (built once per process; providers hold no per-account state)."""
    try:
        return _providers()[name]
    except KeyError:
        raise ValidationFailed(f"Unknown provider: {name}", code="unknown_provider") from None
