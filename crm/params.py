"""Reading JSON bodies and list parameters the same way on every endpoint."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_babel import gettext as _

from crm.errors import DomainError

MAX_LIMIT = 100
DEFAULT_LIMIT = 50


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        data = None
    if data is None:
        raise DomainError(_("The body must be JSON (Content-Type: application/json)."), code="invalid_json")
    if not isinstance(data, dict):
        raise DomainError(_("The body must be a JSON object."), code="invalid_json")
    return data


def page_limit() -> int:
    raw = request.args.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise DomainError(
            _("limit must be a whole number from 1 to %(max)d.", max=MAX_LIMIT), code="invalid_limit"
        )
    return limit


def parse_bool(raw: str) -> bool | None:
    """ "true", "1", "yes" or "false", "0", "no" (any case); None for anything else."""
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    return None


MAX_ID = 2**31 - 1  # ids are INTEGER columns: anything larger can't exist (and overflows drivers)


def parse_id(raw: object) -> int | None:
    """A database id from a form, query string or JSON value; None for anything that can't be one."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str) and raw.isdigit() and len(raw) <= 10:
        raw = int(raw)
    return raw if isinstance(raw, int) and 1 <= raw <= MAX_ID else None
