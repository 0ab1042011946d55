from flask import Blueprint

bp = Blueprint("media", __name__)

from crm.media import views  # noqa: E402,F401
