from __future__ import annotations

from typing import Any

from flask import g

from crm.api import bp
from crm.settings.services import get_workspace


@bp.get("/workspace")
def workspace() -> Any:
    """Who the token is: its workspace and defaults (handy to check a token works)."""
    ws = get_workspace(g.workspace_id)
    return {"id": ws.id, "name": ws.name, "country": ws.country, "timezone": ws.timezone, "locale": ws.locale}
