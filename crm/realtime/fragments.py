"""Which fragment each event refreshes: HTML with ``hx-swap-oob`` and a stable id."""

from __future__ import annotations

import logging

from flask import render_template

from crm.errors import DomainError
from crm.realtime.broker import Event

log = logging.getLogger(__name__)


def render_event(workspace_id: int, event: Event, *, manager: bool) -> str | None:
    kind = str(event.get("type", ""))
    if kind.startswith("webqr.") and manager:
        from crm.whatsapp import webqr

        try:
            view = webqr.pairing_view(workspace_id, int(event["account_id"]))
        except (DomainError, KeyError, ValueError):
            return None
        return render_template("settings/_webqr_panel.html", oob=True, **view)
    return None
