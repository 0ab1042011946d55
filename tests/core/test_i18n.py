"""The Brazilian Portuguese catalogue is complete, keeps every placeholder, and is what people see.

The catalogue is compared with the strings extracted from the source right now (same mapping as
``babel.cfg``, same keywords as ``make messages``), so a new user-facing string without a
translation fails here instead of shipping in English.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask
from flask.testing import FlaskClient
from flask_babel import get_domain

from crm.auth.models import User
from crm.extensions import db
from tests import factories
from tests.conftest import csrf_from

ROOT = Path(__file__).resolve().parents[2]
LC_MESSAGES = ROOT / "crm" / "translations" / "pt_BR" / "LC_MESSAGES"
PO_FILE = LC_MESSAGES / "messages.po"
MO_FILE = LC_MESSAGES / "messages.mo"
KEYWORDS = {**DEFAULT_KEYWORDS, "_l": None}  # `make messages` runs pybabel extract -k _l

# %(name)s, %(n)d, %(max)05.1f ...: the name and the conversion must both survive translation.
PLACEHOLDER = re.compile(r"%\((\w+)\)[-#0 +]*(?:\d+)?(?:\.\d+)?([a-zA-Z])")

PT_BROWSER = {"Accept-Language": "pt-BR,pt;q=0.9"}
EN_BROWSER = {"Accept-Language": "en-US,en;q=0.9"}


def _read_catalogue() -> Catalog:
    with PO_FILE.open("rb") as f:
        return read_po(f, locale="pt_BR")


def _extracted_msgids() -> dict[str, list[str]]:
    """Every msgid in the source (plural entries by their singular), with where it appears."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as f:
        method_map, options_map = parse_mapping_cfg(f)
    found: dict[str, list[str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=KEYWORDS
    ):
        msgid = message if isinstance(message, str) else message[0]
        if msgid:
            found.setdefault(msgid, []).append(f"{filename}:{lineno}")
    return found


def _forms(message: Message) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs to compare: each plural form against the plural msgid."""
    if isinstance(message.id, str):
        return [(message.id, str(message.string or ""))]
    singular, plural = message.id[0], message.id[1]
    strings = message.string if isinstance(message.string, tuple | list) else (message.string,)
    return [(singular if i == 0 else plural, str(s or "")) for i, s in enumerate(strings)]


def _placeholders(text: str) -> set[tuple[str, str]]:
    return set(PLACEHOLDER.findall(text))


@pytest.fixture(scope="module", autouse=True)
def _compiled_catalogue(_app: Flask) -> Iterator[None]:
    """The .mo Flask-Babel reads, compiled from the .po when missing or older (``make`` does it too)."""
    if not MO_FILE.exists() or MO_FILE.stat().st_mtime < PO_FILE.stat().st_mtime:
        catalogue = _read_catalogue()
        fd, tmp = tempfile.mkstemp(dir=LC_MESSAGES, suffix=".mo.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write_mo(f, catalogue)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; pybabel compile's files are not
            os.replace(tmp, MO_FILE)  # atomic: a parallel run never reads half a file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with _app.app_context():
            get_domain().cache.clear()  # translations loaded before the .mo existed were empty
    yield


def test_catalogue_translates_every_source_string() -> None:
    catalogue = _read_catalogue()
    problems = []
    for msgid, where in sorted(_extracted_msgids().items()):
        message = catalogue.get(msgid)
        if message is None:
            problems.append(f"{msgid!r} (not in the catalogue; {where[0]})")
        elif message.fuzzy:
            problems.append(f"{msgid!r} (fuzzy; {where[0]})")
        elif any(not msgstr.strip() for _msgid, msgstr in _forms(message)):
            problems.append(f"{msgid!r} (empty translation; {where[0]})")
    assert not problems, (
        f"{len(problems)} message(s) lack a Brazilian Portuguese translation in "
        f"{os.path.relpath(PO_FILE, ROOT)}:\n  " + "\n  ".join(problems) + "\n"
        "Run `make messages`, then translate every empty or fuzzy msgstr."
    )


def test_catalogue_header() -> None:
    catalogue = _read_catalogue()
    assert str(catalogue.locale) == "pt_BR"
    assert catalogue.num_plurals == 2
    assert catalogue.plural_expr == "(n > 1)"
    assert not catalogue.fuzzy


def test_translations_keep_the_placeholders() -> None:
    wrong = []
    for message in _read_catalogue():
        if not message.id or not message.string:
            continue
        for msgid, msgstr in _forms(message):
            if msgstr and _placeholders(msgstr) != _placeholders(msgid):
                wrong.append(f"{msgid!r} -> {msgstr!r}")
    assert not wrong, "placeholders differ between msgid and msgstr:\n  " + "\n  ".join(wrong)


def test_login_page_follows_the_browser(client: FlaskClient, owner: factories.Person) -> None:
    english = client.get("/login").get_data(as_text=True)
    assert '<html lang="en">' in english
    assert "Sign in" in english
    assert "Entrar" not in english

    portuguese = client.get("/login", headers=PT_BROWSER).get_data(as_text=True)
    assert '<html lang="pt-BR">' in portuguese
    assert "<title>Entrar · Zapdesk</title>" in portuguese
    assert "Senha" in portuguese
    assert "Sign in" not in portuguese


def test_chosen_language_wins_over_the_browser(logged_in: FlaskClient, owner: factories.Person) -> None:
    inbox = logged_in.get("/", headers=PT_BROWSER, follow_redirects=True).get_data(as_text=True)
    assert "Caixa de entrada" in inbox  # nothing chosen yet: the browser decides

    token = csrf_from(logged_in, "/account")
    response = logged_in.post(
        "/account", data={"lang-locale": "pt_BR", "lang-csrf_token": token}, headers=EN_BROWSER
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    user = db.session.get(User, owner.user_id)
    assert user is not None and user.locale == "pt_BR"

    for headers in (EN_BROWSER, {}):
        html = logged_in.get("/", headers=headers, follow_redirects=True).get_data(as_text=True)
        assert '<html lang="pt-BR">' in html
        title = re.search(r"<title>(.*?)</title>", html, re.S)
        assert title and "Caixa de entrada" in title.group(1), title

    # And back: English chosen, a Portuguese browser still gets English.
    token = csrf_from(logged_in, "/account")
    logged_in.post("/account", data={"lang-locale": "en", "lang-csrf_token": token})
    html = logged_in.get("/", headers=PT_BROWSER, follow_redirects=True).get_data(as_text=True)
    assert '<html lang="en">' in html
    assert "<title>Inbox · Zapdesk</title>" in html
