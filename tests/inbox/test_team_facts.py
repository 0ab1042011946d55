"""The team's facts every thread shows (members to assign, AI on) are remembered a few seconds per
process: a change made here shows at once, one made elsewhere within ``TEAM_FACTS_TTL``."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import update

from crm.ai.models import AISettings
from crm.ai.settings import update_settings
from crm.auth import team as members
from crm.auth.models import Membership
from crm.db import utcnow
from crm.extensions import db
from crm.inbox import team
from tests import factories
from tests.inbox.test_ai_inbox import thread


@pytest.fixture
def conversation_id(owner: factories.Person) -> int:
    return factories.inbound(factories.sandbox_account(owner))


def _assignable(page: str, user_id: int) -> bool:
    """Whether the thread's assignee menu offers this person."""
    menu = page.split('name="assignee_id"', 1)[1].split("</select>", 1)[0]
    return f'value="{user_id}"' in menu


def test_changes_made_through_this_process_show_on_the_next_thread(
    logged_in: FlaskClient, owner: factories.Person, conversation_id: int
) -> None:
    agent = factories.person(workspace="Acme", email="agent@acme.example")
    page = thread(logged_in, conversation_id)
    assert "bot-switch" not in page and _assignable(page, agent.user_id)

    update_settings(owner.workspace_id, enabled=True)
    members.set_member_disabled(owner.workspace_id, owner.membership, agent.membership_id, True)

    page = thread(logged_in, conversation_id)
    assert "bot-switch" in page  # the AI switch, seen at once
    assert not _assignable(page, agent.user_id)  # the disabled agent is no longer offered


def test_changes_made_elsewhere_show_within_the_ttl(
    logged_in: FlaskClient, owner: factories.Person, conversation_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = factories.person(workspace="Acme", email="agent@acme.example")
    assert _assignable(thread(logged_in, conversation_id), agent.user_id)
    # Another process (the CLI, another web worker) writes: this one's session never sees it.
    with db.engine.begin() as conn:
        conn.execute(
            update(Membership).where(Membership.id == agent.membership_id).values(disabled_at=utcnow())
        )
        conn.execute(
            AISettings.__table__.insert().values(
                workspace_id=owner.workspace_id, enabled=True, **_ai_defaults(owner.workspace_id)
            )
        )
    assert _assignable(thread(logged_in, conversation_id), agent.user_id)  # remembered, for now

    now = team.time.monotonic()
    monkeypatch.setattr(team.time, "monotonic", lambda: now + team.TEAM_FACTS_TTL + 0.1)
    page = thread(logged_in, conversation_id)
    assert not _assignable(page, agent.user_id) and "bot-switch" in page


def _ai_defaults(workspace_id: int) -> dict[str, object]:
    from crm.ai.settings import settings_of

    blank = settings_of(workspace_id)
    return {
        column.key: getattr(blank, column.key)
        for column in AISettings.__table__.columns
        if column.key not in ("workspace_id", "enabled") and getattr(blank, column.key) is not None
    }


def test_remembered_until_forgotten(app: object, owner: factories.Person) -> None:
    facts = team.team_facts(owner.workspace_id)
    assert [user_id for user_id, _name in facts.members] == [owner.user_id]
    assert team.team_facts(owner.workspace_id) is facts  # remembered
    team.forget(owner.workspace_id)
    assert team.team_facts(owner.workspace_id) is not facts


def test_a_note_keeps_its_authors_name_after_they_leave(
    logged_in: FlaskClient, owner: factories.Person, conversation_id: int
) -> None:
    from crm.inbox import notes

    agent = factories.person(workspace="Acme", email="agent@acme.example")
    notes.add_note(owner.workspace_id, conversation_id, agent.user_id, "Pediu boleto")
    notes.add_note(owner.workspace_id, conversation_id, owner.user_id, "Enviado")
    members.set_member_disabled(owner.workspace_id, owner.membership, agent.membership_id, True)
    page = thread(logged_in, conversation_id)
    assert not _assignable(page, agent.user_id)
    shown = page.split('class="notes"', 1)[1]
    assert "agent@acme.example" in shown and "owner@acme.example" in shown


def test_a_thread_opens_while_redis_does_not_answer(
    logged_in: FlaskClient, conversation_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Who else is viewing is a hint: without it the thread still opens."""
    import redis

    from crm.realtime import presence

    class Hung:
        def members(self, key: str, now: float) -> set[str]:
            raise redis.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(presence, "_store", lambda: Hung())
    page = thread(logged_in, conversation_id)
    assert 'class="viewers"' in page and "is also viewing" not in page
