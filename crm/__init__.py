"""Zapdesk: a self-hosted WhatsApp CRM and shared team inbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from crm.config import ROOT, from_env


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config.from_mapping(from_env())
    if config:
        app.config.from_mapping(config)
    # The embedded queue and database files live here: a fresh CRM_INSTANCE_PATH just works.
    Path(app.config["INSTANCE_PATH"]).mkdir(parents=True, exist_ok=True)

    from crm import cli, db, errors, i18n, logs, security, templating, web, worker
    from crm.media import storage

    logs.setup_logging(app)
    db.setup_db(app)
    worker.setup_worker(app)
    security.setup_security(app)
    i18n.setup_i18n(app)
    templating.setup_templating(app)
    web.setup_blueprints(app)
    storage.setup_storage(app)
    errors.setup_errors(app)
    cli.setup_cli(app)
    return app
