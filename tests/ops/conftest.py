"""Health, metrics and heartbeats keep a little state in each process: each test starts without it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from crm.ops import heartbeat, metrics, recent_errors


@pytest.fixture(autouse=True)
def _no_ops_state_across_tests() -> Iterator[None]:
    from crm import worker

    tasks_app = worker._app.get("app")  # a test that builds another app must not leave it to tasks
    metrics.forget_pending()
    recent_errors.forget_pending()
    heartbeat.forget_local()
    yield
    metrics.forget_pending()
    recent_errors.forget_pending()
    heartbeat.forget_local()
    if tasks_app is not None:
        worker._app["app"] = tasks_app


@pytest.fixture
def other_app(tmp_path: Path, app: Flask) -> Iterator[Callable[..., Flask]]:
    """Build an app with its own settings (a dead Redis, an unreachable database); its database
    connections are closed after the test, so none is left for the garbage collector."""
    from crm import create_app
    from crm.extensions import db
    from tests.conftest import make_test_config

    made: list[Flask] = []

    def make(database_url: str, **overrides: Any) -> Flask:
        made.append(create_app(make_test_config(database_url, tmp_path, **overrides)))
        return made[-1]

    yield make
    for built in made:
        with built.app_context():
            db.session.remove()
            db.engine.dispose()
