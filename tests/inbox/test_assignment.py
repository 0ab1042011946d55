"""Automatic round-robin assignment among the agents online in the inbox."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from crm.auth.models import Membership, Workspace
from crm.extensions import db
from crm.inbox import assignment
from crm.inbox import services as inbox
from crm.inbox.models import Conversation
from crm.realtime import presence
from tests import factories
from tests.conftest import csrf_from


@pytest.fixture
def agents(owner: factories.Person) -> list[factories.Person]:
    return [factories.person("Acme", f"agent{n}@acme.example") for n in (1, 2)]


def _turn_on(workspace_id: int) -> None:
    workspace = db.session.get(Workspace, workspace_id)
    assert workspace is not None
    workspace.auto_assign = True
    db.session.commit()
    assignment.forget(workspace_id)


def _online(person: factories.Person, socket: str = "tab") -> None:
    presence.touch(person.workspace_id, person.user_id, socket, None)


def _assignee(conversation_id: int) -> int | None:
    return db.session.scalar(select(Conversation.assignee_id).where(Conversation.id == conversation_id))


def test_next_in_turn_wraps_around() -> None:
    assert assignment.next_in_turn([7, 3, 5], None) == 3
    assert assignment.next_in_turn([7, 3, 5], 3) == 5
    assert assignment.next_in_turn([7, 3, 5], 7) == 3
    assert assignment.next_in_turn([7, 3, 5], 4) == 5  # the last one went offline: the next id on


def test_new_conversations_go_to_online_agents_in_turn(
    owner: factories.Person, agents: list[factories.Person]
) -> None:
    _turn_on(owner.workspace_id)
    for agent in agents:
        _online(agent)
    account_id = factories.sandbox_account(owner)
    conversations = [factories.inbound(account_id, phone=f"+55119888800{n:02d}") for n in range(3)]
    first, second = sorted(agent.user_id for agent in agents)
    assert [_assignee(c) for c in conversations] == [first, second, first]


def test_nobody_online_leaves_it_unassigned_until_someone_is(
    owner: factories.Person, agents: list[factories.Person]
) -> None:
    _turn_on(owner.workspace_id)
    account_id = factories.sandbox_account(owner)
    conversation_id = factories.inbound(account_id)
    assert _assignee(conversation_id) is None
    _online(agents[0])
    factories.inbound(account_id, text="Alô?")  # the next message of the same customer
    assert _assignee(conversation_id) == agents[0].user_id


def test_it_is_off_unless_turned_on(owner: factories.Person, agents: list[factories.Person]) -> None:
    _online(agents[0])
    conversation_id = factories.inbound(factories.sandbox_account(owner))
    assert _assignee(conversation_id) is None


def test_a_conversation_someone_took_meanwhile_stays_theirs(
    owner: factories.Person, agents: list[factories.Person]
) -> None:
    conversation_id = factories.inbound(factories.sandbox_account(owner))  # still off: unassigned
    _turn_on(owner.workspace_id)
    _online(agents[0])
    inbox.take(owner.workspace_id, conversation_id, agents[1].user_id)
    assert assignment.auto_assign(owner.workspace_id, conversation_id) is None
    assert _assignee(conversation_id) == agents[1].user_id


def test_disabled_members_and_other_workspaces_agents_are_never_chosen(
    owner: factories.Person, agents: list[factories.Person]
) -> None:
    _turn_on(owner.workspace_id)
    stranger = factories.person("Other", "someone@other.example")
    presence.touch(owner.workspace_id, stranger.user_id, "forged", None)  # not a member here
    _online(agents[0])
    membership = db.session.get(Membership, agents[0].membership_id)
    assert membership is not None
    membership.disabled_at = db.func.now()
    db.session.commit()
    conversation_id = factories.inbound(factories.sandbox_account(owner))
    assert _assignee(conversation_id) is None


def test_the_setting_is_saved_from_the_general_page(logged_in: FlaskClient, owner: factories.Person) -> None:
    form = {
        "csrf_token": csrf_from(logged_in, "/settings/"),
        "name": "Acme",
        "country": "BR",
        "timezone": "America/Sao_Paulo",
        "locale": "pt_BR",
        "auto_assign": "y",
    }
    assert logged_in.post("/settings/", data=form).status_code == 302
    workspace = db.session.get(Workspace, owner.workspace_id)
    assert workspace is not None and workspace.auto_assign is True
    del form["auto_assign"]
    assert logged_in.post("/settings/", data=form).status_code == 302
    db.session.refresh(workspace)
    assert workspace.auto_assign is False
