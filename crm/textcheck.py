"""Text that databases and WhatsApp accept: no NUL characters, valid Unicode."""

from __future__ import annotations

from flask_babel import gettext as _

from crm.errors import ValidationFailed


def check_clean_text(text: str, *, code: str = "invalid_text") -> str:
    """The text unchanged, or a 422 when it holds a NUL or a lone surrogate (invalid UTF-8)."""
    if "\x00" in text:
        raise ValidationFailed(_("The text contains a NUL character."), code=code)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed(_("The text is not valid Unicode."), code=code) from None
    return text
