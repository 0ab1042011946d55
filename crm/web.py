"""Extensions that bind to the app and the blueprints, one per domain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.routing import IntegerConverter, Map

from crm.extensions import csrf, migrate, sock
from crm.params import MAX_ID


class DatabaseIdConverter(IntegerConverter):
    """``<int:…>`` ids as the database stores them: 1 to 2**31-1. Anything else is a 404, never
    an overflow error deep in the driver."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min", 1)
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def setup_blueprints(app: Flask) -> None:
    app.url_map.converters["int"] = DatabaseIdConverter
    from crm import health, models  # noqa: F401  (models: the whole schema for Alembic)
    from crm.ai import tasks as ai_tasks  # noqa: F401

    # The routes: each package's __init__ holds only its blueprint, so importing a package's
    # models or services never drags its views (and their imports) in; they are added here.
    from crm.api import auth, broadcasts, lead_imports, views  # noqa: F401
    from crm.api import bp as api_bp
    from crm.archiving import tasks as archiving_tasks  # noqa: F401
    from crm.auth import bp as auth_bp
    from crm.auth import views as auth_views  # noqa: F401
    from crm.broadcasts import bp as broadcasts_bp
    from crm.broadcasts import tasks as broadcasts_tasks  # noqa: F401
    from crm.broadcasts import views as broadcasts_views  # noqa: F401
    from crm.extensions import db
    from crm.inbox import bp as inbox_bp
    from crm.inbox import views as inbox_views  # noqa: F401
    from crm.leads import bp as leads_bp
    from crm.leads import import_views  # noqa: F401
    from crm.leads import tasks as leads_tasks  # noqa: F401
    from crm.leads import views as leads_views  # noqa: F401
    from crm.media import bp as media_bp
    from crm.media import tasks as media_tasks  # noqa: F401
    from crm.media import views as media_views  # noqa: F401
    from crm.realtime import ws  # the /ws route
    from crm.settings import ai_views, archive_views, numbers, webqr_views  # noqa: F401
    from crm.settings import bp as settings_bp
    from crm.settings import views as settings_views  # noqa: F401
    from crm.whatsapp import bp as webhooks_bp
    from crm.whatsapp import (
        tasks,  # noqa: F401  (registers the queue's tasks)
        webhooks,  # noqa: F401
    )

    migrate.init_app(
        app,
        db,
        directory=str(Path(app.root_path).parent / "migrations"),
        render_as_batch=True,
        compare_type=True,
    )
    csrf.init_app(app)
    csrf.exempt(api_bp)  # bearer tokens only; see crm/api/auth.py
    csrf.exempt(webhooks_bp)  # signed by the provider instead; see crm/whatsapp/webhooks.py
    # The sockets' own threads ping (crm/realtime/ws.py, PING_SECONDS); the library's pings would
    # write from its reader thread, past the tab's lock, and answer for the same pongs.
    app.config["SOCK_SERVER_OPTIONS"] = {**app.config.get("SOCK_SERVER_OPTIONS", {}), "ping_interval": None}
    sock.init_app(app)
    app.before_request(ws.decline_compression)
    app.before_request(ws.take_opening_turn)
    app.teardown_request(ws.end_opening_turn)
    for bp in (
        health.bp,
        auth_bp,
        inbox_bp,
        leads_bp,
        broadcasts_bp,
        settings_bp,
        media_bp,
        api_bp,
        webhooks_bp,
    ):
        app.register_blueprint(bp)
