"""The REST API under /api/v1: bearer tokens bound to one workspace, JSON in and out."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")
