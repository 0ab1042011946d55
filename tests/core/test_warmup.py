"""A web process compiles its templates and loads its languages before it serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from tests.processes import own_environment

ROOT = Path(__file__).resolve().parents[2]

# In a fresh process, as a web process starts: after start-up (warmed or not), reading a template's
# source or a language's data from disk fails, then a fragment is rendered in Portuguese with a date.
FIRST_RENDER = """
import sys
from datetime import UTC, datetime

import babel.localedata
from flask import render_template_string
from flask_babel import force_locale

from crm import create_app
from crm.warmup import compile_templates, warm_up
from tests.conftest import make_test_config

app = create_app(make_test_config("sqlite://", sys.argv[2]))
if sys.argv[1] == "warm":
    print(warm_up(app)["templates"])
elif sys.argv[1] == "templates only":
    compile_templates(app)

def from_disk(*args, **kwargs):
    raise AssertionError("read from disk after start-up")

app.jinja_env.loader.get_source = from_disk
babel.localedata.pickle.load = from_disk
with app.test_request_context("/"), force_locale("pt_BR"):
    names = app.jinja_env.list_templates(extensions=["html"])
    for name in names:
        app.jinja_env.get_template(name)
    when = datetime(2026, 12, 5, 15, tzinfo=UTC)
    print(len(names), render_template_string("{{ _('Inbox') }} {{ when|datetime('medium') }}", when=when))
"""


def first_render(mode: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", FIRST_RENDER, mode, str(tmp_path)],
        cwd=ROOT,
        env=own_environment(),  # its settings come from make_test_config
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_warmed_process_renders_its_first_fragment_without_reading_the_disk(tmp_path: Path) -> None:
    warmed = first_render("warm", tmp_path)
    assert warmed.returncode == 0, warmed.stderr
    compiled, shown = warmed.stdout.splitlines()
    listed, _, text = shown.partition(" ")
    assert compiled == listed and int(listed) > 50  # every template of the app, each from memory
    assert text == "Caixa de entrada 5 de dez. de 2026 15:00:00"  # in Portuguese


@pytest.mark.parametrize("mode", ["cold", "templates only"])
def test_without_the_warm_up_the_first_fragment_reads_the_disk(mode: str, tmp_path: Path) -> None:
    """The check above would notice: a process that skipped the templates, or the languages,
    reads from disk."""
    cold = first_render(mode, tmp_path)
    assert cold.returncode != 0 and "read from disk after start-up" in cold.stderr
    assert ("babel" in cold.stderr) == (mode == "templates only")


def test_a_template_that_does_not_compile_does_not_stop_the_start(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from jinja2 import TemplateSyntaxError

    from crm.warmup import compile_templates

    real = app.jinja_env.get_template

    def get_template(name: str) -> object:
        if name == "broken.html":
            raise TemplateSyntaxError("unexpected '}'", 3, name)
        return real(name)

    monkeypatch.setattr(app.jinja_env, "list_templates", lambda extensions: ["base.html", "broken.html"])
    monkeypatch.setattr(app.jinja_env, "get_template", get_template)
    assert compile_templates(app) == 1
    assert "template broken.html does not compile" in caplog.text
