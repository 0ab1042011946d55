"""Phone numbers as people type them → E.164, read in the workspace's default country."""

from __future__ import annotations

import phonenumbers
from flask_babel import gettext as _

from crm.errors import ValidationFailed


def to_e164(raw: str, default_country: str) -> str:
    """E.164 for a number typed with or without country code; ValidationFailed otherwise.

    Accepts what people write: spaces, dashes, parentheses, a leading 00 or +.
    """
    text = (raw or "").replace("\x00", "").strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_country.upper())
    except phonenumbers.NumberParseException as exc:
        raise ValidationFailed(
            _("This is not a phone number: %(phone)s", phone=raw), code="invalid_phone"
        ) from exc
    if not phonenumbers.is_possible_number(number):
        raise ValidationFailed(_("This is not a phone number: %(phone)s", phone=raw), code="invalid_phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def maybe_e164(raw: str, default_country: str) -> str | None:
    try:
        return to_e164(raw, default_country)
    except ValidationFailed:
        return None


def for_humans(e164: str | None) -> str:
    if not e164:
        return ""
    try:
        return phonenumbers.format_number(
            phonenumbers.parse(e164), phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
    except phonenumbers.NumberParseException:
        return e164
