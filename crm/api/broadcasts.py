"""REST API v1: broadcasts (see CONTRACT.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import g
from flask_babel import gettext as _

from crm.api import bp
from crm.broadcasts import services
from crm.errors import ValidationFailed
from crm.params import json_body, parse_id


def parse_scheduled_at(raw: object) -> datetime | None:
    """An ISO 8601 time with an explicit offset (``Z`` or ``+hh:mm``), or None; else 422."""
    if raw is None:
        return None
    moment = None
    if isinstance(raw, str) and 0 < len(raw) <= 40:
        try:
            moment = datetime.fromisoformat(raw.strip())
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is None:
        raise ValidationFailed(
            _("scheduled_at must be an ISO 8601 time with its offset, such as 2026-12-24T09:00:00-03:00."),
            code="invalid_scheduled_at",
        )
    return moment.astimezone(UTC)


def _list_of(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 1000:
        raise ValidationFailed(_("%(name)s must be a list.", name=name), code=f"invalid_{name}")
    return value


def _ids(body: dict[str, Any], name: str) -> list[int] | None:
    if body.get(name) is None:
        return None
    ids = [parse_id(v) if not isinstance(v, str) else None for v in _list_of(body, name)]
    if any(i is None for i in ids):
        raise ValidationFailed(_("%(name)s must be a list of ids.", name=name), code=f"invalid_{name}")
    return [i for i in ids if i is not None]


def _draft(body: dict[str, Any]) -> services.Draft:
    variants = _list_of(body, "variants") if body.get("variants") is not None else [body.get("text")]
    if body.get("text") is not None and body.get("variants") is not None:
        variants = [body.get("text"), *variants]
    days = body.get("exclude_contacted_days")
    if days is not None and (not isinstance(days, int) or isinstance(days, bool)):
        raise ValidationFailed(
            _("exclude_contacted_days must be a number of days."), code="invalid_exclusion"
        )
    return services.Draft(
        name=body.get("name"),  # checked by the service, like every value here
        variants=variants,
        tags=_list_of(body, "tags"),
        exclude_tags=_list_of(body, "exclude_tags"),
        exclude_contacted_days=days,
        group_ids=_ids(body, "group_ids") or [],
        account_ids=_ids(body, "account_ids"),
        scheduled_at=parse_scheduled_at(body.get("scheduled_at")),
        user_id=g.api_token.user_id,
    )


@bp.post("/broadcasts")
def create_broadcast() -> Any:
    broadcast = services.create_broadcast(g.workspace_id, _draft(json_body()))
    return services.as_dict(broadcast), 201


@bp.get("/broadcasts")
def list_broadcasts() -> Any:
    return {"items": [services.as_dict(b) for b in services.list_broadcasts(g.workspace_id)]}


@bp.get("/broadcasts/<int:broadcast_id>")
def broadcast_detail(broadcast_id: int) -> Any:
    return services.as_dict(services.get_broadcast(g.workspace_id, broadcast_id))


@bp.post("/broadcasts/<int:broadcast_id>/pause")
def pause_broadcast(broadcast_id: int) -> Any:
    return services.as_dict(services.pause_broadcast(g.workspace_id, broadcast_id))


@bp.post("/broadcasts/<int:broadcast_id>/resume")
def resume_broadcast(broadcast_id: int) -> Any:
    return services.as_dict(services.resume_broadcast(g.workspace_id, broadcast_id))


@bp.post("/broadcasts/<int:broadcast_id>/cancel")
def cancel_broadcast(broadcast_id: int) -> Any:
    return services.as_dict(services.cancel_broadcast(g.workspace_id, broadcast_id))
