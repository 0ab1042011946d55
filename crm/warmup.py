"""What a web process would otherwise do on its first requests and first live event, done before it
serves them.

Measured on the first live event after a start (bench/fanout.py, 2026-12-05): rendering a new
message's fragments took 120-165 ms against 10-20 ms later, every open tab of the process waiting
for it: Babel read the language's data from disk (~55 ms) and Jinja compiled the two templates
(~60 ms); the rest was SQLAlchemy compiling its statements, which needs the data and stays. Every
page's first view paid the same for its own templates. So each web process compiles every
template (86, ~0.5 s in all) and loads each language's data and catalogue once, at start-up,
before the garbage collector's walks are spared what start-up made (crm/heap.py).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from flask import Flask

log = logging.getLogger(__name__)

DATE_FORMATS = ("short", "medium", "long")


def warm_up(app: Flask) -> dict[str, float | int]:
    """Compile the templates, load each language and configure the mappers; returns what it did
    (templates compiled, seconds taken)."""
    began = time.perf_counter()
    templates = compile_templates(app)
    load_languages(app)
    from sqlalchemy.orm import configure_mappers

    configure_mappers()
    return {"templates": templates, "seconds": round(time.perf_counter() - began, 3)}


def compile_templates(app: Flask) -> int:
    """Every template of the app, compiled into Jinja's cache; returns how many. One that does not
    compile is left for its page to report: it must not keep the whole server from starting."""
    compiled = 0
    for name in app.jinja_env.list_templates(extensions=["html"]):
        try:
            app.jinja_env.get_template(name)
        except Exception:
            log.exception("template %s does not compile", name)
        else:
            compiled += 1
    return compiled


def load_languages(app: Flask) -> None:
    """Each language's catalogue and Babel data (dates, times, numbers), as a page reads them."""
    from flask_babel import force_locale, format_decimal

    from crm import i18n_fast

    now = datetime.now(UTC)
    with app.test_request_context("/"):
        for language in app.config["LANGUAGES"]:
            with force_locale(language):
                i18n_fast.gettext("Inbox")
                for fmt in DATE_FORMATS:
                    i18n_fast.format_datetime(now, fmt)
                format_decimal(1234.5)
