"""The same words and dates as Flask-Babel, looked up faster: a page of 50 messages asks for about
150 translations and 50 dates, and Flask-Babel resolves the request's language, zone and
catalogue again on every call (with Babel formatting each date field by field).

- Translations: the request's catalogue is remembered beside Flask-Babel's own per-request state
  and looked up again only when the language changes (``force_locale``, ``refresh``).
- Dates: Babel writes a standard date-and-time ("short", "medium", "long", "full") as the day's
  part and the time's part put into the language's pattern ("{1}, {0}"). The day's part depends
  only on the day, and a time's part without a zone field only on the hour, minute and second, so
  each part is formatted by Babel once and remembered; the result is Babel's, character for
  character (tests/core/test_i18n_fast.py compares them). Anything else goes to Babel directly.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime
from typing import Any, Literal, cast

from babel import Locale, dates, support
from flask import g, has_app_context
from flask_babel import _get_current_context, get_locale, get_timezone, get_translations

STANDARD = ("short", "medium", "long", "full")
# Time fields that depend on the hour, minute and second alone (no zone, no fraction of a second).
TIME_FIELDS = frozenset("hHkKmsabB")
# Date fields that depend on the day alone (no zone, no time of day).
DATE_FIELDS = frozenset("GyYuUrQqMLlwWdDFgEecn")
PART_CACHE_MAX = 50_000  # per kind of part; cleared when full (~10 MB at most)
_NULL = support.NullTranslations()
_time_parts: dict[tuple[str, str, int, int, int], str] = {}
_date_parts: dict[tuple[str, str, date], str] = {}


def translations() -> support.NullTranslations:
    """The catalogue of the current request's language (Flask-Babel's ``get_translations``)."""
    if not has_app_context():
        return _NULL
    cached = g.get("crm_catalogue")  # (Flask-Babel's state, its language then, the catalogue)
    if cached is not None and getattr(cached[0], "babel_locale", None) is cached[1]:
        return cached[2]
    found = get_translations()
    # get_locale() is the object Flask-Babel keeps until force_locale or refresh replaces it.
    g.crm_catalogue = (_get_current_context(), get_locale(), found)
    return found


def N_(message: str) -> str:  # noqa: N802 (the name pybabel looks for)
    """Marks a text for translation where it is written; ``gettext`` looks it up when shown."""
    return message


def gettext(message: str) -> str:
    return str(translations().ugettext(message))


def ngettext(singular: str, plural: str, n: int) -> str:
    return str(translations().ungettext(singular, plural, n))


def pgettext(context: str, message: str) -> str:
    return str(translations().upgettext(context, message))


def npgettext(context: str, singular: str, plural: str, n: int) -> str:
    return str(translations().unpgettext(context, singular, plural, n))


def _fields(pattern: str) -> set[str]:
    return {value[0] for kind, value in dates.tokenize_pattern(pattern) if kind == "field"}


def _reader() -> tuple[Locale, str, Any]:
    """The request's language (and its name) and time zone, remembered like the catalogue."""
    cached: tuple[Any, Locale, str, Any] | None = g.get("crm_reader") if has_app_context() else None
    if (
        cached is not None
        and getattr(cached[0], "babel_locale", None) is cached[1]
        and getattr(cached[0], "babel_tzinfo", None) is cached[3]
    ):
        return cached[1], cached[2], cached[3]
    locale, tzinfo = get_locale(), get_timezone()
    if locale is None:  # outside a request: what Flask-Babel falls back to
        return Locale.parse("en"), "en", tzinfo
    g.crm_reader = (_get_current_context(), locale, str(locale), tzinfo)
    return locale, str(locale), tzinfo


def reader_key() -> tuple[str, str]:
    """The request's language and time zone by name: what a remembered page part depends on."""
    _, locale_id, tzinfo = _reader()
    return locale_id, str(tzinfo)


@functools.lru_cache(maxsize=64)
def _layout(locale_id: str, fmt: str) -> tuple[str, bool, bool, bool] | None:
    """For a standard format: the language's "{1}, {0}" and whether its time and date parts can be
    remembered by their hour/minute(/second) and by their day, and whether it shows seconds."""
    if fmt not in STANDARD:
        return None
    locale = Locale.parse(locale_id)
    name = cast(Literal["full", "long", "medium", "short"], fmt)
    time_fields = _fields(dates.get_time_format(name, locale).pattern)
    date_fields = _fields(dates.get_date_format(name, locale).pattern)
    outer = str(dates.get_datetime_format(name, locale=locale)).replace("'", "")
    return outer, time_fields <= TIME_FIELDS, date_fields <= DATE_FIELDS, "s" in time_fields


def _remember(cache: dict[Any, str], key: Any, value: str) -> str:
    if len(cache) >= PART_CACHE_MAX:
        cache.clear()
    cache[key] = value
    return value


def format_datetime(value: datetime, fmt: str = "medium") -> str:
    """``flask_babel.format_datetime(value, fmt)``: in the reader's zone and language."""
    locale, locale_id, tzinfo = _reader()
    layout = _layout(locale_id, fmt)
    if layout is None:
        return dates.format_datetime(value, fmt, tzinfo=tzinfo, locale=locale)
    outer, time_ok, date_ok, seconds = layout
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    local = aware.astimezone(tzinfo)
    if time_ok:
        tkey = (locale_id, fmt, local.hour, local.minute, local.second if seconds else 0)
        time_part = _time_parts.get(tkey) or _remember(
            _time_parts, tkey, dates.format_time(local, fmt, tzinfo=None, locale=locale)
        )
    else:
        time_part = dates.format_time(local, fmt, tzinfo=None, locale=locale)
    if date_ok:
        dkey = (locale_id, fmt, local.date())
        date_part = _date_parts.get(dkey) or _remember(
            _date_parts, dkey, dates.format_date(local, fmt, locale=locale)
        )
    else:
        date_part = dates.format_date(local, fmt, locale=locale)
    return outer.replace("{0}", time_part).replace("{1}", date_part)
