"""Bearer-token authentication for every /api/v1 route. Cookies are never accepted here,
so the API needs no CSRF token and a browser session can't be ridden into it."""

from __future__ import annotations

from typing import Any

from flask import g, request
from flask_babel import gettext as _

from crm.api import bp
from crm.auth.team import authenticate_token
from crm.errors import json_error


@bp.before_request
def require_token() -> Any:
    header = request.headers.get("Authorization", "")
    scheme, _sep, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        return _unauthorized(_('Send an API token in the header "Authorization: Bearer <token>".'))
    api_token = authenticate_token(raw.strip())
    if api_token is None:
        return _unauthorized(_("The API token is invalid or was revoked."))
    g.api_token = api_token
    g.workspace_id = api_token.workspace_id
    return None


def _unauthorized(message: str) -> Any:
    response = json_error(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
    return response
