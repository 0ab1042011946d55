"""A broadcast's text for one lead: ``{{variables}}`` with fallbacks, and a variant picked at random.

``{{name}}``, ``{{first_name}}``, ``{{phone}}``, ``{{email}}`` and any custom field by its name
(``{{company}}``); ``{{name|there}}`` writes "there" when the lead has no name. The variant is
picked by a random generator seeded with the recipient's id, so the same recipient always gets
the same variant (a retried batch writes the same message).
"""

from __future__ import annotations

import random
import re
from typing import Any

from flask_babel import gettext as _

from crm.errors import ValidationFailed
from crm.leads.models import Lead

VARIABLE = re.compile(r"\{\{\s*([^{}|]*?)\s*(?:\|\s*([^{}]*?)\s*)?\}\}")
BUILTIN = ("name", "first_name", "phone", "email")
MAX_VARIANTS = 10


def check_variables(text: str) -> str:
    """422 for a ``{{`` that does not name a variable (a typo people would otherwise send)."""
    for match in VARIABLE.finditer(text):
        if not match.group(1):
            raise ValidationFailed(
                _("'%(token)s' names no variable: write {{name}}, {{name|fallback}} or a field name.",
                  token=match.group(0)),
                code="invalid_variable",
            )  # fmt: skip
    leftover = VARIABLE.sub("", text)
    if "{{" in leftover or "}}" in leftover:
        raise ValidationFailed(_("A variable is not closed: write it as {{name}}."), code="invalid_variable")
    return text


def lead_values(lead: Lead) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in (lead.custom_fields or {}).items():
        if value not in (None, ""):
            values[str(key).casefold()] = str(value)
    name = " ".join((lead.name or "").split())
    values.update(
        name=name,
        first_name=name.split(" ")[0] if name else "",
        phone=lead.phone or "",
        email=lead.email or "",
    )
    return {k: v for k, v in values.items() if v}


def render(text: str, values: dict[str, str]) -> str:
    def value_of(match: re.Match[str]) -> str:
        key = match.group(1).casefold().replace(" ", "_")
        return values.get(key) or values.get(match.group(1).casefold()) or (match.group(2) or "")

    rendered = VARIABLE.sub(value_of, text)
    # A missing value without a fallback leaves "Hi , ..." behind: tidy the spaces it leaves.
    return re.sub(r"[ \t]+([,.!?;:])", r"\1", re.sub(r"[ \t]{2,}", " ", rendered)).strip()


def pick_variant(variants: list[str], recipient_id: int) -> int:
    return random.Random(recipient_id).randrange(len(variants)) if len(variants) > 1 else 0


def render_for(variants: list[str], recipient_id: int, lead: Lead | Any) -> tuple[int, str]:
    index = pick_variant(variants, recipient_id)
    values = lead_values(lead) if isinstance(lead, Lead) else {}
    return index, render(variants[index], values)
