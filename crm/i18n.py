"""Language and time zone per request: the person's choice, else the browser's; the workspace's zone."""

from __future__ import annotations

from datetime import datetime

from flask import Flask, current_app, g, has_request_context, request
from flask_babel import format_date, get_locale
from flask_login import current_user

from crm import i18n_fast as fast
from crm.extensions import babel


def select_locale() -> str | None:
    if not has_request_context():  # CLI and tasks speak the default language
        return None
    languages: list[str] = current_app.config["LANGUAGES"]
    if current_user and current_user.is_authenticated and current_user.locale in languages:
        return str(current_user.locale)
    # Accept-Language uses "pt-BR"; our catalogues are named "pt_BR". Any Portuguese gets pt_BR.
    offered = ["en", "pt-BR", "pt"]
    best = request.accept_languages.best_match(offered)
    if best in ("pt-BR", "pt"):
        return "pt_BR"
    return "en" if best else None


def select_timezone() -> str | None:
    workspace_id = g.get("workspace_id")
    if workspace_id is None:
        return None
    from crm.settings.services import get_workspace

    return get_workspace(workspace_id).timezone


def setup_i18n(app: Flask) -> None:
    babel.init_app(app, locale_selector=select_locale, timezone_selector=select_timezone)
    # The same catalogues as Flask-Babel installs, looked up once per request and language.
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=fast.gettext,
        ngettext=fast.ngettext,
        pgettext=fast.pgettext,
        npgettext=fast.npgettext,
        newstyle=True,
    )

    app.jinja_env.globals["html_lang"] = lambda: str(get_locale() or "en").replace("_", "-")

    @app.template_filter("datetime")
    def _datetime(value: datetime | None, fmt: str = "short") -> str:
        return fast.format_datetime(value, fmt) if value else ""

    @app.template_filter("date")
    def _date(value: datetime | None, fmt: str = "medium") -> str:
        """The day, in the reader's time zone and language."""
        return format_date(value, fmt) if value else ""
