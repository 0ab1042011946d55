"""`flask crm set-ai`: the same settings as the AI settings page, as JSON."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from crm.ai.models import AISettings
from crm.extensions import db
from tests import factories
from tests.cli.test_commands import run


def test_set_ai_stores_the_settings_and_the_knowledge_text(
    app: Flask, owner: factories.Person, tmp_path: Path
) -> None:
    knowledge = tmp_path / "faq.txt"
    knowledge.write_text("\ufeffHorário: 9h às 18h.\nCorte: R$ 50.\n", encoding="utf-8")
    code, payload, err = run(
        app,
        "set-ai",
        "--workspace",
        "Acme",
        "--enabled",
        "true",
        "--mode",
        "after_hours",
        "--model",
        "gemini-2.5-flash-lite",
        "--instructions",
        "Seja breve.",
        "--knowledge-file",
        str(knowledge),
        "--fallback",
        "Já respondemos!",
        "--per-minute",
        "12",
        "--per-day",
        "300",
    )
    assert code == 0, err
    assert payload is not None
    expected = {
        "enabled": True,
        "mode": "after_hours",
        "model": "gemini-2.5-flash-lite",
        "instructions": "Seja breve.",
        "fallback": "Já respondemos!",
        "per_minute": 12,
        "per_day": 300,
        "knowledge_chars": len("Horário: 9h às 18h.\nCorte: R$ 50."),
    }
    assert {key: payload[key] for key in expected} == expected
    settings = db.session.get_one(AISettings, owner.workspace_id)
    assert settings.knowledge == "Horário: 9h às 18h.\nCorte: R$ 50."  # the text, not the path

    code, payload, _ = run(app, "set-ai", "--workspace", "Acme", "--enabled", "false")
    assert code == 0 and payload is not None
    assert payload["enabled"] is False and payload["per_minute"] == 12  # the rest is kept


def test_set_ai_refuses_bad_input_and_changes_nothing(
    app: Flask, owner: factories.Person, tmp_path: Path
) -> None:
    assert run(app, "set-ai", "--workspace", "Acme", "--enabled", "true", "--per-minute", "5")[0] == 0
    latin1 = tmp_path / "faq.txt"
    latin1.write_bytes("Preço: R$ 50".encode("latin-1"))
    cases = [
        ["--per-minute", "0"],
        ["--per-day", "-1"],
        ["--mode", "sometimes"],
        ["--model", "two words"],
        ["--model", "models/"],
        ["--knowledge-file", str(latin1)],
        ["--knowledge-file", str(tmp_path / "missing.txt")],
    ]
    for extra in cases:
        code, payload, err = run(app, "set-ai", "--workspace", "Acme", "--enabled", "false", *extra)
        assert code != 0 and payload is None, extra
        assert err and "\n" not in err
    code, _, err = run(app, "set-ai", "--workspace", "Nope", "--enabled", "true")
    assert code == 1 and err
    settings = db.session.get_one(AISettings, owner.workspace_id)
    db.session.refresh(settings)
    assert (settings.enabled, settings.per_minute, settings.knowledge) == (True, 5, "")
