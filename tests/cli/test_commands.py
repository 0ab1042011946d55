"""The CLI contract: a JSON object on the last stdout line and exit 0, or one line on stderr and exit 1."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from sqlalchemy import func, select

from crm.auth.models import ApiToken, Membership, User, Workspace
from crm.extensions import db


def run(app: Flask, *args: str) -> tuple[int, dict[str, object] | None, str]:
    result = app.test_cli_runner().invoke(args=["crm", *args])
    lines = result.stdout.strip().splitlines()
    payload = json.loads(lines[-1]) if result.exit_code == 0 and lines else None
    return result.exit_code, payload, result.stderr.strip()


ADMIN = ["create-admin", "--workspace", "Acme", "--email", "Owner@Acme.example", "--password", "long enough"]


def test_create_admin_creates_workspace_and_owner(app: Flask) -> None:
    code, payload, _ = run(app, *ADMIN, "--country", "PT", "--timezone", "Europe/Lisbon")
    assert code == 0 and payload is not None
    workspace = db.session.get(Workspace, payload["workspace_id"])
    user = db.session.get(User, payload["user_id"])
    assert workspace is not None and (workspace.country, workspace.timezone) == ("PT", "Europe/Lisbon")
    assert user is not None and user.email == "owner@acme.example"
    membership = db.session.scalar(select(Membership))
    assert membership is not None and membership.role == "owner"


def test_create_admin_defaults_to_brazil(app: Flask) -> None:
    code, payload, _ = run(app, *ADMIN)
    assert code == 0 and payload is not None
    workspace = db.session.get(Workspace, payload["workspace_id"])
    assert workspace is not None and (workspace.country, workspace.timezone) == ("BR", "America/Sao_Paulo")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--email", "not-an-email"], "valid email"),
        (["--password", "short"], "at least 8"),
        (["--country", "XX"], "Unknown country"),
        (["--timezone", "Nowhere/City"], "Unknown time zone"),
    ],
)
def test_create_admin_refuses_bad_arguments(app: Flask, override: list[str], message: str) -> None:
    args = list(ADMIN)
    flag = override[0]
    if flag in args:
        args[args.index(flag) + 1] = override[1]
    else:
        args += override
    code, _, stderr = run(app, *args)
    assert code != 0 and message in stderr and len(stderr.splitlines()) == 1
    assert db.session.scalar(select(func.count()).select_from(User)) == 0
    assert db.session.scalar(select(func.count()).select_from(Workspace)) == 0


def test_create_token(app: Flask) -> None:
    run(app, *ADMIN)
    code, payload, _ = run(
        app, "create-token", "--workspace", "Acme", "--email", "owner@acme.example", "--name", "CRM sync"
    )
    assert code == 0 and payload is not None and str(payload["token"]).startswith("zd_")
    row = db.session.scalar(select(ApiToken))
    assert row is not None and row.name == "CRM sync" and row.token_hash != payload["token"]


@pytest.mark.parametrize(
    ("workspace", "email", "message"),
    [("Nope", "owner@acme.example", "Unknown workspace"), ("Acme", "who@acme.example", "unknown user")],
)
def test_create_token_refuses_unknowns(app: Flask, workspace: str, email: str, message: str) -> None:
    run(app, *ADMIN)
    code, _, stderr = run(app, "create-token", "--workspace", workspace, "--email", email)
    assert code != 0 and message in stderr
    assert db.session.scalar(select(func.count()).select_from(ApiToken)) == 0


@pytest.mark.parametrize(
    "args",
    [
        ["create-admin", "--workspace", "Acme"],
        [
            "add-account",
            "--workspace",
            "Acme",
            "--provider",
            "sandbox",
            "--name",
            "x",
            "--max-per-minute",
            "abc",
        ],
    ],
    ids=["missing-option", "wrong-type"],
)
def test_usage_mistakes_are_one_line(app: Flask, args: list[str]) -> None:
    code, _, stderr = run(app, *args)
    assert code != 0 and len(stderr.splitlines()) == 1 and stderr.startswith("Error:")


def test_add_account_prints_the_webhook_path_for_cloud_numbers(app: Flask) -> None:
    run(app, *ADMIN)
    code, payload, _ = run(
        app,
        "add-account",
        "--workspace",
        "Acme",
        "--provider",
        "cloud",
        "--name",
        "Sales",
        "--phone-number-id",
        "123",
        "--access-token",
        "t",
        "--app-secret",
        "s",
        "--verify-token",
        "v",
        "--max-per-minute",
        "60",
    )
    assert code == 0 and payload is not None and str(payload["webhook_path"]).startswith("/webhooks/cloud/")
    code, payload, _ = run(
        app, "add-account", "--workspace", "Acme", "--provider", "sandbox", "--name", "Test"
    )
    assert code == 0 and payload is not None and set(payload) == {"account_id"}
    code, _, stderr = run(app, "add-account", "--workspace", "Acme", "--provider", "fax", "--name", "Old")
    assert code != 0 and "Unknown provider" in stderr
    code, _, stderr = run(app, "add-account", "--workspace", "Acme", "--provider", "cloud", "--name", "Half")
    assert code != 0 and "needs" in stderr
