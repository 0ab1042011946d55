"""The REST API under /api/v1: bearer tokens bound to one workspace, JSON in and out."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from crm.api import auth, broadcasts, lead_imports, views  # noqa: E402,F401
