"""Phone numbers as people type them → E.164, read in the workspace's default country."""

from __future__ import annotations

from collections.abc import Callable

import phonenumbers
from flask_babel import gettext as _

from crm.errors import ValidationFailed


def e164_or_none(
    raw: str,
    default_country: str,
    *,
    parse: Callable[[str, str], phonenumbers.PhoneNumber] = phonenumbers.parse,
) -> str | None:
    """E.164 for a number typed with or without country code, or None when it is not one.

    Accepts what people write: spaces, dashes, parentheses, a leading 00 or +. The one place that
    decides what a phone number is: forms, the API and CSV imports all read numbers through here,
    so the same text always gives the same lead. (Imports read numbers through
    ``crm.leads.fastcheck.e164_or_none``: the same answers, faster.)
    """
    text = as_written(raw)
    try:
        number = parse(text, default_country.upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def as_written(raw: str) -> str:
    """The text ``e164_or_none`` parses: NULs dropped, trimmed, a leading 00 read as +."""
    text = (raw or "").replace("\x00", "").strip()
    return "+" + text[2:] if text.startswith("00") else text


def digits_of(text: str) -> str:
    """The ASCII digits of what someone typed: "(11) 98765-4321" → "11987654321". Phones are
    stored in E.164, so other digits could never match one."""
    return "".join(ch for ch in text if ch.isascii() and ch.isdigit())


def to_e164(raw: str, default_country: str) -> str:
    """E.164 for a number typed with or without country code; ValidationFailed otherwise."""
    e164 = e164_or_none(raw, default_country)
    if e164 is None:
        raise ValidationFailed(_("This is not a phone number: %(phone)s", phone=raw), code="invalid_phone")
    return e164


def maybe_e164(raw: str, default_country: str) -> str | None:
    return e164_or_none(raw, default_country)


def for_humans(e164: str | None) -> str:
    if not e164:
        return ""
    try:
        return phonenumbers.format_number(
            phonenumbers.parse(e164), phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
    except phonenumbers.NumberParseException:
        return e164


def phone_variants(e164: str | None) -> list[str]:
    """The other spellings of the same Brazilian mobile line: with or without the ninth digit."""
    if not e164 or not e164.startswith("+55"):
        return []
    national = e164[3:]
    if len(national) == 11 and national[2] == "9":
        return ["+55" + national[:2] + national[3:]]
    if len(national) == 10 and national[2] in "6789":
        return ["+55" + national[:2] + "9" + national[2:]]
    return []
