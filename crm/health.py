from __future__ import annotations

from typing import Any

from flask import Blueprint
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from crm.errors import json_error
from crm.extensions import db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    """Liveness: answers 503 when the database can't be reached."""
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        db.session.rollback()
        return json_error(503, "database_unavailable", "The database is unreachable.")
    return {"status": "ok"}
