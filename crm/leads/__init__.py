from flask import Blueprint

bp = Blueprint("leads", __name__, url_prefix="/leads")

from crm.leads import import_views, views  # noqa: E402,F401
