"""Secrets at rest (access tokens, app secrets, WebQR session keys), encrypted with Fernet.

The key is derived from ENCRYPTION_KEY when set, else from SECRET_KEY, with HKDF-SHA256, so the
session-signing key is never used directly as an encryption key.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app


class SecretUnreadable(Exception):
    """The stored secret can't be decrypted: SECRET_KEY/ENCRYPTION_KEY changed since it was saved."""


def _fernet() -> Fernet:
    return _fernet_for(current_app.config.get("ENCRYPTION_KEY") or current_app.config["SECRET_KEY"])


@functools.lru_cache(maxsize=8)
def _fernet_for(material: str) -> Fernet:
    """Derived once per key (HKDF is cheap but runs on every webhook otherwise)."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"zapdesk secrets at rest v1").derive(
        material.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt_json(data: dict[str, Any]) -> str:
    return _fernet().encrypt(json.dumps(data, separators=(",", ":")).encode()).decode()


def decrypt_json(token: str | None) -> dict[str, Any]:
    if not token:
        return {}
    return dict(_decrypted(_fernet(), token))


@functools.lru_cache(maxsize=256)
def _decrypted(fernet: Fernet, token: str) -> dict[str, Any]:
    """Kept per ciphertext (a webhook checks the same app secret on every delivery); a changed
    secret is a new ciphertext, so nothing stale is ever returned."""
    try:
        value = json.loads(fernet.decrypt(token.encode()))
    except InvalidToken as exc:
        raise SecretUnreadable("stored secrets cannot be decrypted with the current key") from exc
    return value if isinstance(value, dict) else {}
