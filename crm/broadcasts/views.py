from __future__ import annotations

from flask import render_template
from flask_login import login_required

from crm.broadcasts import bp


@bp.get("/")
@login_required
def index() -> str:
    return render_template("broadcasts/index.html")
