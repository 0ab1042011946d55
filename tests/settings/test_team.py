from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from crm.auth.models import Invitation, Membership, UserSession
from crm.extensions import db
from tests import factories
from tests.conftest import csrf_from, login


def post(client: FlaskClient, url: str, **data: str) -> int:
    data.setdefault("csrf_token", csrf_from(client, "/"))
    return client.post(url, data=data).status_code


def test_team_page_lists_members(logged_in: FlaskClient, owner: factories.Person) -> None:
    factories.person("Acme", "agent@acme.example")
    html = logged_in.get("/settings/team").get_data(as_text=True)
    assert "owner@acme.example" in html and "agent@acme.example" in html


def test_agents_cannot_manage_the_team(client: FlaskClient, owner: factories.Person) -> None:
    agent = factories.person("Acme", "agent@acme.example")
    login(client, agent.email)
    assert client.get("/settings/team").status_code == 403
    assert client.get("/settings/tokens").status_code == 403
    assert post(client, f"/settings/team/members/{owner.membership_id}/disable") == 403
    assert owner.membership.disabled_at is None


def test_invitation_link_works_once(logged_in: FlaskClient, client: FlaskClient, app: object) -> None:
    html = logged_in.post(
        "/settings/team/invitations",
        data={"email": "New@Acme.example", "role": "admin", "csrf_token": csrf_from(logged_in, "/")},
    ).get_data(as_text=True)
    link = re.search(r'value="(http[^"]+/invite/[^"]+)"', html)
    assert link, html
    path = "/invite/" + link.group(1).rsplit("/invite/", 1)[1]

    newcomer = logged_in.application.test_client()
    token = csrf_from(newcomer, path)
    response = newcomer.post(path, data={"name": "Nova", "password": "a good password", "csrf_token": token})
    assert response.status_code == 302
    assert "<title>Inbox" in newcomer.get("/").get_data(as_text=True)
    member = db.session.scalar(select(Membership).where(Membership.role == "admin"))
    assert member is not None and member.user.email == "new@acme.example"

    again = logged_in.application.test_client()
    assert again.get(path).status_code == 404


def test_invitation_for_an_existing_person_needs_their_password(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    elsewhere = factories.person("Other", "known@other.example", role="owner")
    created = factories.invitation(owner, elsewhere.email)
    path = f"/invite/{created.token}"
    visitor = logged_in.application.test_client()
    csrf = csrf_from(visitor, path)
    wrong = visitor.post(path, data={"password": "not it", "csrf_token": csrf})
    assert wrong.status_code == 400 and "The password is wrong." in wrong.get_data(as_text=True)
    ok = visitor.post(path, data={"password": factories.PASSWORD, "csrf_token": csrf})
    assert ok.status_code == 302
    assert (
        len(db.session.scalars(select(Membership).where(Membership.user_id == elsewhere.user_id)).all()) == 2
    )


def test_revoked_or_expired_invitation_is_404(logged_in: FlaskClient, owner: factories.Person) -> None:
    from datetime import timedelta

    from crm.db import utcnow

    revoked = factories.invitation(owner, "a@acme.example")
    assert post(logged_in, f"/settings/team/invitations/{revoked.invitation.id}/revoke") == 302
    expired = factories.invitation(owner, "b@acme.example")
    row = db.session.get(Invitation, expired.invitation.id)
    assert row is not None
    row.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    for created in (revoked, expired):
        assert logged_in.application.test_client().get(f"/invite/{created.token}").status_code == 404


def test_inviting_a_member_again_is_refused(logged_in: FlaskClient) -> None:
    factories.person("Acme", "agent@acme.example")
    response = logged_in.post(
        "/settings/team/invitations",
        data={"email": "agent@acme.example", "role": "agent", "csrf_token": csrf_from(logged_in, "/")},
    )
    assert response.status_code == 409
    assert "already a member" in response.get_data(as_text=True)
    assert db.session.scalar(select(Invitation)) is None


@pytest.mark.parametrize("email", ["", "not-an-email"])
def test_invitation_with_bad_email_changes_nothing(logged_in: FlaskClient, email: str) -> None:
    response = logged_in.post(
        "/settings/team/invitations",
        data={"email": email, "role": "agent", "csrf_token": csrf_from(logged_in, "/")},
    )
    assert response.status_code == 400
    assert db.session.scalar(select(Invitation)) is None


def test_change_role(logged_in: FlaskClient) -> None:
    agent = factories.person("Acme", "agent@acme.example")
    assert post(logged_in, f"/settings/team/members/{agent.membership_id}/role", role="admin") == 302
    assert agent.membership.role == "admin"
    assert post(logged_in, f"/settings/team/members/{agent.membership_id}/role", role="emperor") == 400
    assert agent.membership.role == "admin"


def test_admin_cannot_touch_an_owner_or_grant_ownership(client: FlaskClient, owner: factories.Person) -> None:
    admin = factories.person("Acme", "admin@acme.example", role="admin")
    agent = factories.person("Acme", "agent@acme.example")
    login(client, admin.email)
    assert post(client, f"/settings/team/members/{owner.membership_id}/role", role="agent") == 403
    assert post(client, f"/settings/team/members/{agent.membership_id}/role", role="owner") == 403
    assert post(client, f"/settings/team/members/{owner.membership_id}/disable") == 403
    assert owner.membership.role == "owner" and agent.membership.role == "agent"


def test_nobody_changes_their_own_access(logged_in: FlaskClient, owner: factories.Person) -> None:
    assert post(logged_in, f"/settings/team/members/{owner.membership_id}/role", role="agent") == 403
    assert post(logged_in, f"/settings/team/members/{owner.membership_id}/disable") == 403
    assert owner.membership.role == "owner" and owner.membership.disabled_at is None


def test_disabling_a_member_ends_their_sessions_at_once(logged_in: FlaskClient) -> None:
    agent = factories.person("Acme", "agent@acme.example")
    agent_client = logged_in.application.test_client()
    login(agent_client, agent.email)
    assert agent_client.get("/").status_code == 200
    assert post(logged_in, f"/settings/team/members/{agent.membership_id}/disable") == 302
    assert agent_client.get("/").status_code == 302
    assert login(agent_client, agent.email).status_code == 403  # "account disabled"
    assert post(logged_in, f"/settings/team/members/{agent.membership_id}/enable") == 302
    assert login(agent_client, agent.email).status_code == 302


def test_admin_ends_a_members_sessions(logged_in: FlaskClient) -> None:
    agent = factories.person("Acme", "agent@acme.example")
    agent_client = logged_in.application.test_client()
    login(agent_client, agent.email)
    assert post(logged_in, f"/settings/team/members/{agent.membership_id}/sessions/end") == 302
    assert agent_client.get("/").status_code == 302
    row = db.session.scalar(select(UserSession).where(UserSession.user_id == agent.user_id))
    assert row is not None and row.revoked_reason == "ended_by_admin"


def test_workspace_switcher(client: FlaskClient) -> None:
    first = factories.person("Alpha", "multi@team.example", role="owner")
    second = factories.person("Beta", "multi@team.example", role="agent")
    login(client, first.email)
    html = client.get("/").get_data(as_text=True)
    assert 'name="workspace_id"' in html and "Alpha" in html and "Beta" in html
    assert post(client, "/workspaces/switch", workspace_id=str(second.workspace_id)) == 302
    assert client.get("/settings/team").status_code == 403  # an agent in Beta
    assert post(client, "/workspaces/switch", workspace_id=str(first.workspace_id)) == 302
    assert client.get("/settings/team").status_code == 200


def test_workspace_settings_validate_before_saving(logged_in: FlaskClient, owner: factories.Person) -> None:
    csrf = csrf_from(logged_in, "/")
    bad = logged_in.post(
        "/settings/",
        data={
            "name": "Acme",
            "country": "XX",
            "timezone": "Mars/Base",
            "locale": "pt_BR",
            "csrf_token": csrf,
        },
    )
    assert bad.status_code == 422
    good = logged_in.post(
        "/settings/",
        data={
            "name": "Acme Ltda",
            "country": "pt",
            "timezone": "Europe/Lisbon",
            "locale": "en",
            "csrf_token": csrf,
        },
    )
    assert good.status_code == 302
    ws = owner.membership.workspace
    assert (ws.name, ws.country, ws.timezone, ws.locale) == ("Acme Ltda", "PT", "Europe/Lisbon", "en")


def test_a_new_invitation_replaces_the_pending_one(owner: factories.Person) -> None:
    first = factories.invitation(owner, "twice@acme.example")
    second = factories.invitation(owner, "twice@acme.example")
    pending = db.session.scalars(select(Invitation).where(Invitation.revoked_at.is_(None))).all()
    assert [i.id for i in pending] == [second.invitation.id] != [first.invitation.id]
