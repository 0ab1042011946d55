"""crm.i18n_fast gives exactly what Flask-Babel gives: the same dates character for character in
every language, zone and standard format, and the right catalogue when the language changes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
import pytz
from flask import Flask, render_template_string
from flask_babel import _get_current_context, force_locale, format_datetime, refresh

from crm import i18n_fast

ZONES = ["UTC", "America/Sao_Paulo", "America/Manaus", "Europe/Lisbon", "Asia/Kolkata", "Pacific/Chatham"]


def _moments(count: int) -> list[datetime]:
    rnd = random.Random(5)
    start = datetime(2019, 1, 1)
    # Around the clock and the calendar, DST changes included; naive (stored UTC) and aware.
    found = [start + timedelta(seconds=rnd.randrange(0, 8 * 365 * 86400)) for _ in range(count)]
    found += [datetime(2019, 11, 3, 2, 30), datetime(2024, 2, 29, 23, 59, 59), datetime(2026, 12, 31, 12)]
    return found + [m.replace(tzinfo=UTC) for m in found[:20]]


@pytest.mark.parametrize("locale", ["en", "pt_BR", "es", "de"])
@pytest.mark.parametrize("fmt", ["short", "medium", "long", "full", "yyyy-MM-dd HH:mm"])
def test_dates_equal_flask_babels(app: Flask, locale: str, fmt: str) -> None:
    with app.test_request_context("/"), force_locale(locale):
        for zone in ZONES:
            _get_current_context().babel_tzinfo = pytz.timezone(zone)
            for moment in _moments(300):
                assert i18n_fast.format_datetime(moment, fmt) == format_datetime(moment, fmt), (zone, moment)
                # Remembered parts come back the same the second time.
                assert i18n_fast.format_datetime(moment, fmt) == format_datetime(moment, fmt)


def test_parts_forgotten_when_full(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(i18n_fast, "PART_CACHE_MAX", 10)
    monkeypatch.setattr(i18n_fast, "_time_parts", {})
    monkeypatch.setattr(i18n_fast, "_date_parts", {})
    with app.test_request_context("/"):
        for moment in _moments(50):
            assert i18n_fast.format_datetime(moment, "medium") == format_datetime(moment, "medium")
    assert len(i18n_fast._time_parts) <= 10 and len(i18n_fast._date_parts) <= 10


def test_catalogue_follows_the_language(app: Flask) -> None:
    template = "{{ _('Team notes') }}|{{ ngettext('%(num)d message', '%(num)d messages', 2) }}"
    with app.test_request_context("/"):
        english = render_template_string(template)
        with force_locale("pt_BR"):
            portuguese = render_template_string(template)
            assert i18n_fast.gettext("Team notes") == "Notas da equipe"
        assert render_template_string(template) == english  # back after force_locale
        _get_current_context().babel_locale = None
        refresh()
        assert render_template_string(template) == english
    assert english.startswith("Team notes|")
    assert portuguese.startswith("Notas da equipe|") and portuguese != english


def test_outside_a_request_nothing_is_translated(app: Flask) -> None:
    with app.app_context():
        assert i18n_fast.gettext("Team notes") == "Team notes"
