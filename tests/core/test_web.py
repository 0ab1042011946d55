"""Cross-cutting web behaviour: headers, errors, health, CSRF on HTMX requests."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from crm import create_app
from tests import factories
from tests.conftest import csrf_from, make_test_config


def test_security_headers(logged_in: FlaskClient) -> None:
    response = logged_in.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"


def test_pages_use_only_self_hosted_assets(logged_in: FlaskClient) -> None:
    html = logged_in.get("/").get_data(as_text=True)
    assert "http://" not in html.replace("http://localhost", "") and "https://" not in html
    assert "<script>" not in html and " style=" not in html  # nothing inline: CSP forbids it


@pytest.mark.parametrize(
    "path", ["/", "/leads/", "/broadcasts/", "/settings/", "/settings/team", "/settings/tokens", "/account"]
)
def test_shell_pages_render_for_the_owner(logged_in: FlaskClient, path: str) -> None:
    response = logged_in.get(path)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for label in ("Inbox", "Leads", "Broadcasts", "Settings"):
        assert f"> {label}</a>" in html


def test_htmx_posts_need_the_csrf_header(logged_in: FlaskClient) -> None:
    token = csrf_from(logged_in, "/")
    refused = logged_in.post("/settings/tokens", data={"name": "x"}, headers={"HX-Request": "true"})
    assert refused.status_code == 400
    accepted = logged_in.post(
        "/settings/tokens", data={"name": "x"}, headers={"HX-Request": "true", "X-CSRFToken": token}
    )
    assert accepted.status_code == 200


def test_html_404_page(logged_in: FlaskClient) -> None:
    response = logged_in.get("/no/such/page")
    assert response.status_code == 404 and "Back to the inbox" in response.get_data(as_text=True)


def test_healthz_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    app = create_app(make_test_config(f"sqlite:///{tmp_path}/missing-dir/x.sqlite3", tmp_path))
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json is not None and response.json["error"]["code"] == "database_unavailable"


def test_method_not_allowed_is_json_on_the_api(client: FlaskClient, owner: factories.Person) -> None:
    response = client.delete(
        "/api/v1/workspace", headers={"Authorization": f"Bearer {factories.api_token(owner)}"}
    )
    assert response.status_code == 405
    assert response.json is not None and response.json["error"]["code"] == "method_not_allowed"


def test_config_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/env.sqlite3")
    monkeypatch.setenv("SECRET_KEY", "from-env")
    monkeypatch.setenv("GRAPH_API_URL", "http://127.0.0.1:9/graph")
    app = create_app({"TESTING": True, "HUEY_IMMEDIATE": True})
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("env.sqlite3")
    assert app.config["SECRET_KEY"] == "from-env"
    assert app.config["GRAPH_API_URL"] == "http://127.0.0.1:9/graph"
    assert app.config["REDIS_URL"] is None
    with app.app_context():
        from crm.extensions import db

        db.engine.dispose()


def test_factory_accepts_a_config_mapping(_app: Flask) -> None:
    assert _app.config["TESTING"] is True and _app.config["HUEY_IMMEDIATE"] is True


def test_a_fresh_instance_directory_is_created(tmp_path: Path) -> None:
    # The embedded queue and database open their files in there: a new path must just work.
    instance = tmp_path / "new" / "instance"
    app = create_app(make_test_config(f"sqlite:///{tmp_path}/x.sqlite3", instance))
    assert instance.is_dir() and app.config["INSTANCE_PATH"] == str(instance)
    with app.app_context():
        from crm.extensions import db

        db.engine.dispose()
