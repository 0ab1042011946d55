from __future__ import annotations

from flask_login import login_required

from crm.htmx import render
from crm.inbox import bp


@bp.get("/")
@login_required
def index() -> str:
    return render("inbox/index.html", "inbox/_conversations.html", conversations=[])
