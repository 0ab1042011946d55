from flask import Blueprint

bp = Blueprint("inbox", __name__)

from crm.inbox import views  # noqa: E402,F401
