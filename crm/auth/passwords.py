"""Password hashing with argon2id (OWASP parameters, configurable) and opaque random tokens."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256


def _hasher() -> PasswordHasher:
    cfg = current_app.config
    return PasswordHasher(
        time_cost=cfg["ARGON2_TIME_COST"],
        memory_cost=cfg["ARGON2_MEMORY_KIB"],
        parallelism=cfg["ARGON2_PARALLELISM"],
    )


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY: dict[str, str] = {}


def burn_verify_time(password: str) -> None:
    """Spend the time of a real verification, so an unknown email answers as slowly as a known one."""
    key = "dummy"
    if key not in _DUMMY:
        _DUMMY[key] = hash_password(secrets.token_urlsafe(16))
    verify_password(_DUMMY[key], password)


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """Tokens are long random strings, so a fast unsalted SHA-256 is the right storage hash."""
    return hashlib.sha256(token.encode()).hexdigest()
