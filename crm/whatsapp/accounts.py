"""Numbers of a workspace: add, edit, list. Secrets are encrypted at rest and never shown again."""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from flask_babel import gettext as _
from sqlalchemy import ColumnElement, Table, bindparam, select

from crm.crypto import SecretUnreadable, decrypt_json, encrypt_json
from crm.errors import NotFound, ValidationFailed
from crm.extensions import db
from crm.leads.services import iso
from crm.tenancy import get_scoped, scoped
from crm.whatsapp.models import AccountEvent, Health, WhatsAppAccount
from crm.whatsapp.providers.registry import PROVIDER_NAMES

log = logging.getLogger(__name__)

CLOUD_SECRET_FIELDS = ("access_token", "app_secret", "verify_token")


@dataclass(frozen=True)
class CloudSettings:
    phone_number_id: str = ""
    access_token: str = ""
    app_secret: str = ""
    verify_token: str = ""
    waba_id: str = ""
    graph_url: str = ""


def _check_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name or len(name) > 120:
        raise ValidationFailed(_("Give the number a label of up to 120 characters."), code="invalid_name")
    return name


def _check_rate(max_per_minute: int | None) -> int | None:
    if max_per_minute is None:
        return None
    if not 1 <= max_per_minute <= 100_000:
        raise ValidationFailed(_("The per-minute cap must be between 1 and 100000."), code="invalid_rate")
    return max_per_minute


def _check_graph_url(url: str) -> str:
    url = url.strip()
    if url and not url.startswith(("https://", "http://")):
        raise ValidationFailed(_("The Graph API URL must start with https://"), code="invalid_url")
    return url.rstrip("/")


def create_account(
    workspace_id: int,
    *,
    provider: str,
    name: str,
    max_per_minute: int | None = None,
    cloud: CloudSettings | None = None,
    priority: int = 0,
) -> WhatsAppAccount:
    """Add a number; validated whole before anything is written."""
    if provider not in PROVIDER_NAMES:
        raise ValidationFailed(_("Unknown provider: %(p)s", p=provider), code="unknown_provider")
    account = WhatsAppAccount(
        workspace_id=workspace_id,
        provider=provider,
        name=_check_name(name),
        max_per_minute=_check_rate(max_per_minute),
        priority=priority,
        health=Health.CONNECTED.value,
        settings={},
    )
    if provider == "cloud":
        cloud = cloud or CloudSettings()
        missing = [
            f
            for f in ("phone_number_id", "access_token", "app_secret", "verify_token")
            if not getattr(cloud, f).strip()
        ]
        if missing:
            raise ValidationFailed(
                _("A Cloud API number needs: %(fields)s", fields=", ".join(missing)), code="missing_settings"
            )
        account.settings = {
            "phone_number_id": cloud.phone_number_id.strip(),
            "waba_id": cloud.waba_id.strip(),
            "graph_url": _check_graph_url(cloud.graph_url),
        }
        account.secrets_encrypted = encrypt_json({f: getattr(cloud, f).strip() for f in CLOUD_SECRET_FIELDS})
        account.webhook_key = secrets.token_urlsafe(24)
    elif provider == "webqr":
        account.health = Health.LOGGED_OUT.value  # until its QR code is scanned
        account.health_reason = "Scan the QR code to connect this number."
    db.session.add(account)
    db.session.commit()
    return account


def update_account(
    workspace_id: int,
    account_id: int,
    *,
    name: str,
    max_per_minute: int | None,
    active: bool,
    priority: int = 0,
    weight: int = 100,
    fallback_account_id: int | None = None,
    cloud: CloudSettings | None = None,
) -> WhatsAppAccount:
    """Edit a number. Blank secret fields keep the stored secret (it is never shown back)."""
    account = get_scoped(WhatsAppAccount, workspace_id, account_id)
    if not 0 <= weight <= 100:
        raise ValidationFailed(_("The weight must be between 0 and 100."), code="invalid_weight")
    if fallback_account_id is not None:
        if fallback_account_id == account.id:
            raise ValidationFailed(_("A number cannot be its own fallback."), code="invalid_fallback")
        get_scoped(WhatsAppAccount, workspace_id, fallback_account_id)
    account.name = _check_name(name)
    account.max_per_minute = _check_rate(max_per_minute)
    account.status = "active" if active else "disabled"
    account.priority, account.weight, account.fallback_account_id = priority, weight, fallback_account_id
    if account.provider == "cloud" and cloud is not None:
        if all(getattr(cloud, f).strip() for f in CLOUD_SECRET_FIELDS):
            stored: dict[str, Any] = {}  # all re-entered: the old blob needn't be readable
        else:
            try:
                stored = decrypt_json(account.secrets_encrypted)
            except SecretUnreadable:
                raise ValidationFailed(
                    _("The stored secrets can't be read (was SECRET_KEY changed?). Enter all of them again."),
                    code="secrets_unreadable",
                ) from None
        for f in CLOUD_SECRET_FIELDS:
            if getattr(cloud, f).strip():
                stored[f] = getattr(cloud, f).strip()
        account.secrets_encrypted = encrypt_json(stored)
        account.settings = {
            **account.settings,
            "phone_number_id": cloud.phone_number_id.strip() or account.settings.get("phone_number_id", ""),
            "waba_id": cloud.waba_id.strip(),
            "graph_url": _check_graph_url(cloud.graph_url),
        }
        if account.health == Health.LOGGED_OUT.value and cloud.access_token.strip():
            account.health, account.health_reason = Health.CONNECTED.value, None  # a new token: try again
    db.session.commit()
    return account


def list_accounts(workspace_id: int) -> list[WhatsAppAccount]:
    return list(
        db.session.scalars(
            scoped(select(WhatsAppAccount), WhatsAppAccount, workspace_id).order_by(
                WhatsAppAccount.priority, WhatsAppAccount.id
            )
        )
    )


def get_account(workspace_id: int, account_id: int) -> WhatsAppAccount:
    return get_scoped(WhatsAppAccount, workspace_id, account_id)


class WebhookTarget(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def secrets_encrypted(self) -> str | None: ...


@dataclass(frozen=True)
class NumberRef:
    """What the inbound path needs of a number, read in one Core query without loading the ORM
    object (this runs on every webhook delivery)."""

    id: int
    workspace_id: int
    provider: str
    phone_number_id: str
    secrets_encrypted: str | None = field(default=None, repr=False)


def _number_select() -> Any:
    accounts = cast(Table, WhatsAppAccount.__table__)
    return select(
        accounts.c.id,
        accounts.c.workspace_id,
        accounts.c.provider,
        accounts.c.settings,
        accounts.c.secrets_encrypted,
    )


@functools.cache
def _webhook_target_select() -> Any:  # built once: this runs on every delivery
    accounts = cast(Table, WhatsAppAccount.__table__)
    return _number_select().where(accounts.c.webhook_key == bindparam("key"), accounts.c.provider == "cloud")


def _number_refs(statement: Any, params: dict[str, Any] | None = None) -> list[NumberRef]:
    return [
        NumberRef(
            row.id,
            row.workspace_id,
            row.provider,
            str((row.settings or {}).get("phone_number_id", "")),
            row.secrets_encrypted,
        )
        for row in db.session.connection().execute(statement, params)
    ]


def number_refs(where: ColumnElement[bool]) -> list[NumberRef]:
    return _number_refs(_number_select().where(where))


def webhook_target(key: str) -> NumberRef:
    """The Cloud number a webhook is addressed to, by the secret key in its URL."""
    found = _number_refs(_webhook_target_select(), {"key": key})
    if not found:
        raise NotFound("webhook")
    return found[0]


def webhook_path(account: WhatsAppAccount) -> str | None:
    return f"/webhooks/cloud/{account.webhook_key}" if account.webhook_key else None


def _secret(account: WebhookTarget, name: str) -> str:
    try:
        return str(decrypt_json(account.secrets_encrypted).get(name, ""))
    except SecretUnreadable:
        log.error("account %s: stored secrets can't be decrypted (SECRET_KEY changed?)", account.id)
        return ""


def check_verify_token(account: WebhookTarget, token: str) -> bool:
    expected = _secret(account, "verify_token")
    return bool(expected) and hmac.compare_digest(expected.encode(), token.encode())


def check_signature(account: WebhookTarget, body: bytes, header: str | None) -> bool:
    """``X-Hub-Signature-256: sha256=<hex>``: HMAC-SHA256 of the raw body, compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    app_secret = _secret(account, "app_secret")
    if not app_secret:
        return False
    expected = hmac.new(app_secret.encode(), body, "sha256").hexdigest()
    return hmac.compare_digest(expected, header[len("sha256=") :].strip().lower())


def account_json(account: WhatsAppAccount) -> dict[str, Any]:
    return {
        "id": account.id,
        "provider": account.provider,
        "name": account.name,
        "phone": account.phone,
        "status": account.status,
        "health": account.health,
        "health_reason": account.health_reason,
        "max_per_minute": account.max_per_minute,
        "webhook_path": webhook_path(account),
        "health_changed_at": iso(account.health_changed_at),
    }


def health_history(workspace_id: int, account_id: int, limit: int = 50) -> list[AccountEvent]:
    account = get_scoped(WhatsAppAccount, workspace_id, account_id)
    return list(
        db.session.scalars(
            select(AccountEvent)
            .where(AccountEvent.account_id == account.id)
            .order_by(AccountEvent.id.desc())
            .limit(limit)
        )
    )
