from flask import Blueprint

bp = Blueprint("settings", __name__, url_prefix="/settings")

from crm.settings import ai_views, numbers, views, webqr_views  # noqa: E402,F401
