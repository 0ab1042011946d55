"""Every route that takes an id answers 404 for another workspace's id, exactly like a missing one."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import factories
from tests.conftest import csrf_from, login


def _broadcast(other: factories.Person) -> int:
    from crm.broadcasts.services import Draft, create_broadcast

    account = factories.sandbox_account(other, "Broadcasts")
    factories.lead(other, "+5511977770000", "Recipient", opt_in=True)
    draft = Draft(name="Promo", variants=["Oi"], account_ids=[account])
    return create_broadcast(other.workspace_id, draft).id


# How to find, in the *other* workspace, an object for each kind of id a route can take.
# A new route with an id parameter must be added here, or this test fails and says so.
FOREIGN_OBJECTS: dict[str, Callable[[factories.Person], int]] = {
    "member_id": lambda other: other.membership_id,
    "invitation_id": lambda other: factories.invitation(other, "invitee@other.example").invitation.id,
    "token_id": lambda other: factories.api_token_row(other),
    "session_id": lambda other: factories.session_for(other).id,
    "account_id": factories.sandbox_account,
    "conversation_id": factories.conversation,
    "canned_id": factories.canned_reply,
    "media_id": factories.media_file,
    "message_id": factories.message,
    "lead_id": factories.lead,
    "import_id": factories.lead_import,
    "broadcast_id": _broadcast,
    "suggestion_id": factories.ai_suggestion,
}

ID_ARG = re.compile(r"<(?:int:)?(\w+_id)>")


def id_routes(app: Flask) -> list[tuple[str, str, tuple[str, ...]]]:
    routes = []
    for rule in app.url_map.iter_rules():
        args = tuple(a for a in rule.arguments if a.endswith("_id"))
        if not args:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((rule.rule, method, args))
    return routes


def test_every_id_route_is_covered(app: Flask) -> None:
    unknown = {arg for _rule, _method, args in id_routes(app) for arg in args} - set(FOREIGN_OBJECTS)
    assert not unknown, f"add these id kinds to FOREIGN_OBJECTS: {sorted(unknown)}"
    assert id_routes(app), "expected routes with ids"


def test_another_workspaces_ids_answer_404(app: Flask, client: FlaskClient) -> None:
    me = factories.person("Mine", "me@mine.example", role="owner")
    other = factories.person("Theirs", "them@theirs.example", role="owner")
    colleague = factories.person("Theirs", "colleague@theirs.example", role="agent")
    foreign = {name: make(other) for name, make in FOREIGN_OBJECTS.items()}
    foreign["member_id"] = colleague.membership_id
    my_token = factories.api_token(me)
    assert login(client, me.email).status_code == 302
    csrf = csrf_from(client, "/")

    checked = 0
    for rule, method, args in id_routes(app):
        url = rule
        for arg in args:
            url = re.sub(rf"<(?:int:)?{arg}>", str(foreign[arg]), url)
        headers = {"Authorization": f"Bearer {my_token}"} if rule.startswith("/api/") else {}
        kwargs: dict[str, object] = {}
        if method != "GET":
            form = {"csrf_token": csrf, "role": "agent", "text": "hi", "ai_enabled": True}
            kwargs = {"json": form} if rule.startswith("/api/") else {"data": form}
        response = client.open(url, method=method, headers=headers, **kwargs)
        assert response.status_code == 404, f"{method} {url} answered {response.status_code}"
        checked += 1
    assert checked == len(id_routes(app)) > 0

    # Nothing changed on the other side.
    from crm.auth.models import Invitation, Membership, UserSession
    from crm.extensions import db

    member = db.session.get(Membership, colleague.membership_id)
    assert member is not None and member.disabled_at is None and member.role == "agent"
    invitation = db.session.get(Invitation, foreign["invitation_id"])
    assert invitation is not None and invitation.revoked_at is None
    session = db.session.get(UserSession, foreign["session_id"])
    assert session is not None and session.revoked_at is None


@pytest.mark.parametrize("workspace_id", ["999", "not-a-number"])
def test_switching_to_a_workspace_you_are_not_in_is_404(logged_in: FlaskClient, workspace_id: str) -> None:
    other = factories.person("Elsewhere", "x@elsewhere.example")
    csrf = csrf_from(logged_in, "/")
    for target in (workspace_id, str(other.workspace_id)):
        response = logged_in.post("/workspaces/switch", data={"workspace_id": target, "csrf_token": csrf})
        assert response.status_code == 404
