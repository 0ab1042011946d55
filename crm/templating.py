"""What every template can use: the signed-in person, their workspaces, the navigation."""

from __future__ import annotations

import functools
from typing import Any

from flask import Flask, g
from flask_babel import format_number
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.local import LocalProxy

from crm.i18n_fast import N_, gettext


def _shell_context() -> dict[str, Any]:
    if not current_user or not current_user.is_authenticated or g.get("membership") is None:
        return {}
    from crm.auth.services import active_memberships

    user_id, membership = current_user.id, g.membership
    # Read by the page shell only: loaded when a template uses them, so fragments (and every
    # websocket push) skip these queries.
    memberships = functools.cache(lambda: active_memberships(user_id))
    return {
        "membership": membership,
        "workspace": LocalProxy(lambda: membership.workspace),
        "my_memberships": LocalProxy(memberships),
    }


def _role_label(role: str) -> str:
    labels = {"owner": _("Owner"), "admin": _("Admin"), "agent": _("Agent")}
    return str(labels.get(role, role))


def message_summary(message: Any) -> str:
    """What a message says in one line: its text, else what it carries."""
    if message.text:
        return str(message.text)
    from crm.media.services import kind_label

    if message.type in ("image", "video", "audio", "document", "sticker"):
        return kind_label(message.type)
    labels = {"location": _("Location"), "contacts": _("Contact"), "reaction": _("Reaction")}
    return str(labels.get(message.type, f"[{message.type}]"))


MESSAGE_STATUSES = {
    "queued": N_("Queued"),
    "sending": N_("Sending"),
    "sent": N_("Sent"),
    "delivered": N_("Delivered"),
    "read": N_("Read"),
    "played": N_("Played"),
    "failed": N_("Failed"),
}


def message_status(status: str) -> str:
    """A message's status in the reader's language (one lookup: every bubble shows one)."""
    found = MESSAGE_STATUSES.get(status)
    return gettext(found) if found is not None else status


def _ai_error(code: str | None) -> str:
    """Why the AI could not answer, in a few words (the codes of ``crm.ai``)."""
    from crm.settings.ai import error_text

    return error_text(code)


def _ai_error_advice(code: str | None) -> str:
    from crm.settings.ai import error_advice

    return error_advice(code)


def setup_templating(app: Flask) -> None:
    app.context_processor(_shell_context)
    app.add_template_filter(_role_label, "role_label")
    from crm.db import utcnow

    app.jinja_env.globals["now"] = utcnow
    from crm.leads.phones import for_humans
    from crm.media.limits import human_size

    app.jinja_env.filters["media_size"] = human_size
    app.jinja_env.filters["number"] = format_number  # 1,234 or 1.234, in the reader's locale
    app.jinja_env.filters["message_summary"] = message_summary
    app.jinja_env.filters["message_status"] = message_status
    app.jinja_env.filters["ai_error"] = _ai_error
    app.jinja_env.filters["ai_error_advice"] = _ai_error_advice
    app.jinja_env.globals["for_humans"] = for_humans  # phones as people write them, in any template
    from crm.inbox.bubbles import bubbles, conversation_row

    app.jinja_env.globals["bubbles"] = bubbles  # message bubbles, remembered while they don't change
    app.jinja_env.globals["conversation_row"] = conversation_row  # a list row, the same way
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
