"""Tenancy in one place: every query on tenant data is scoped to a workspace here.

Another workspace's row is indistinguishable from a missing one: both raise NotFound (404).
"""

from __future__ import annotations

from typing import Any, TypeVar

from flask import g
from sqlalchemy import Select

from crm.errors import NotFound
from crm.extensions import db

T = TypeVar("T")


def scoped(stmt: Select[Any], model: type[Any], workspace_id: int) -> Select[Any]:
    """Restrict a SELECT on a tenant-owned model to one workspace."""
    return stmt.where(model.workspace_id == workspace_id)


def get_scoped(model: type[T], workspace_id: int, object_id: int) -> T:
    """The row of ``model`` with this id in this workspace, or NotFound (missing or other tenant).

    By primary key, so a row this request already loaded costs no second query."""
    obj = db.session.get(model, object_id)
    if obj is None or obj.workspace_id != workspace_id:  # type: ignore[attr-defined]
        raise NotFound(f"{model.__name__} {object_id}")
    return obj


def current_workspace_id() -> int:
    """The workspace of the current request (set by session or token authentication)."""
    workspace_id: int | None = g.get("workspace_id")
    if workspace_id is None:
        raise RuntimeError("no workspace bound to this request")
    return workspace_id
