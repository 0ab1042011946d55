from flask import Blueprint

bp = Blueprint("broadcasts", __name__, url_prefix="/broadcasts")
