from flask import Blueprint

bp = Blueprint("broadcasts", __name__, url_prefix="/broadcasts")

from crm.broadcasts import views  # noqa: E402,F401
