"""The keys of leads and tags hold on both databases: on SQLite as foreign keys, on PostgreSQL as
triggers that check a statement's rows at once (migration 0023)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, bindparam, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from crm.auth.models import Workspace
from crm.extensions import db
from crm.leads.models import Lead, LeadTag
from tests import factories

NEW_LEAD = (
    "INSERT INTO leads (workspace_id, phone, kind, name, notes, source, opt_in, custom_fields,"
    " created_at, updated_at)"
    " VALUES (:ws, :phone, 'person', 'Ana', '', 'manual', false, '{}', '2026-12-05', '2026-12-05')"
)
NEW_TAG = "INSERT INTO lead_tags (workspace_id, lead_id, name, key) VALUES (:ws, :lead, :name, :key)"


def _tags(lead_id: int) -> list[str]:
    return sorted(db.session.scalars(select(LeadTag.key).where(LeadTag.lead_id == lead_id)))


def _refused(statement: str, **params: object) -> None:
    with pytest.raises(IntegrityError):
        db.session.execute(text(statement), params)
    db.session.rollback()


@pytest.fixture
def two_workspaces(app: object) -> tuple[factories.Person, factories.Person]:
    return (
        factories.person("Acme", "owner@acme.example", role="owner"),
        factories.person("Globex", "owner@globex.example", role="owner"),
    )


def test_a_lead_needs_a_workspace_that_exists(owner: factories.Person) -> None:
    missing = owner.workspace_id + 1000
    _refused(NEW_LEAD, ws=missing, phone="+5511900000001")
    _refused(  # many rows at once, one of them wrong
        "INSERT INTO leads (workspace_id, phone, kind, name, notes, source, opt_in, custom_fields,"
        " created_at, updated_at) SELECT CASE WHEN g = 3 THEN :missing ELSE :ws END,"
        " '+551190000000' || g::text, 'person', '', '', 'manual', false, '{}', '2026-12-05', '2026-12-05'"
        " FROM generate_series(1, 5) AS g"
        if db.engine.dialect.name == "postgresql"
        else NEW_LEAD.replace(":ws", ":missing"),
        ws=owner.workspace_id,
        missing=missing,
        phone="+5511900000002",
    )
    assert db.session.scalar(select(func.count()).select_from(Lead)) == 0


def test_a_tag_needs_its_lead_in_its_own_workspace(two_workspaces: tuple[factories.Person, ...]) -> None:
    acme, globex = two_workspaces
    lead_id = factories.lead(acme, "+5511900000001", tags=("vip",))
    _refused(NEW_TAG, ws=acme.workspace_id, lead=lead_id + 1000, name="x", key="x")
    _refused(NEW_TAG, ws=globex.workspace_id, lead=lead_id, name="x", key="x")  # another workspace's lead
    _refused(
        "UPDATE lead_tags SET lead_id = :lead WHERE workspace_id = :ws",
        ws=acme.workspace_id,
        lead=lead_id + 1000,
    )
    db.session.execute(
        text(NEW_TAG), {"ws": acme.workspace_id, "lead": lead_id, "name": "Nova", "key": "nova"}
    )
    db.session.commit()
    assert _tags(lead_id) == ["nova", "vip"]


def test_a_new_lead_is_tagged_only_with_its_own_workspace(
    two_workspaces: tuple[factories.Person, ...],
) -> None:
    """A lead and its tags written by one statement (as an import does), with a tag naming the
    wrong workspace: refused, and the lead with it."""
    acme, globex = two_workspaces
    if db.engine.dialect.name != "postgresql":
        pytest.skip("a statement that writes two tables is PostgreSQL's")
    statement = (
        "WITH new AS (" + NEW_LEAD + " RETURNING id)"
        " INSERT INTO lead_tags (workspace_id, lead_id, name, key) SELECT :tag_ws, id, 'vip', 'vip' FROM new"
    )
    _refused(statement, ws=acme.workspace_id, tag_ws=globex.workspace_id, phone="+5511900000001")
    db.session.execute(
        text(statement), {"ws": acme.workspace_id, "tag_ws": acme.workspace_id, "phone": "+5511900000001"}
    )
    db.session.commit()
    (lead_id,) = db.session.scalars(select(Lead.id))
    assert _tags(lead_id) == ["vip"]


def test_deleting_leads_deletes_their_tags_and_no_one_elses(
    two_workspaces: tuple[factories.Person, ...],
) -> None:
    acme, globex = two_workspaces
    gone = [factories.lead(acme, f"+551190000000{n}", tags=("a", "b")) for n in range(3)]
    kept = factories.lead(acme, "+5511900000009", tags=("a",))
    theirs = factories.lead(globex, "+5511900000001", tags=("a",))
    db.session.execute(
        text("DELETE FROM leads WHERE id IN :ids").bindparams(bindparam("ids", expanding=True)), {"ids": gone}
    )
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(LeadTag).where(LeadTag.lead_id.in_(gone))) == 0
    assert (_tags(kept), _tags(theirs)) == (["a"], ["a"])


def test_deleting_a_workspace_deletes_its_leads_and_their_tags(
    two_workspaces: tuple[factories.Person, ...],
) -> None:
    acme, globex = two_workspaces
    factories.lead(acme, "+5511900000001", tags=("vip",))
    theirs = factories.lead(globex, "+5511900000001", tags=("vip",))
    db.session.execute(text("DELETE FROM workspaces WHERE id = :ws"), {"ws": acme.workspace_id})
    db.session.commit()
    assert list(db.session.scalars(select(Lead.id))) == [theirs]
    assert list(db.session.scalars(select(LeadTag.lead_id))) == [theirs]


# --- PostgreSQL: what the triggers lock, and keys that never change --------------------------------


@pytest.fixture
def other_connection(owner: factories.Person) -> Iterator[Connection]:
    """A second connection, as another process would have: it gives up on a lock after 300 ms."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: there is no concurrent delete to hold off")
    with db.engine.connect() as connection:
        connection.execute(text("SET lock_timeout = '300ms'"))
        yield connection
        connection.rollback()


def test_a_workspace_can_not_be_deleted_under_a_lead_being_written(
    owner: factories.Person, other_connection: Connection
) -> None:
    db.session.execute(text(NEW_LEAD), {"ws": owner.workspace_id, "phone": "+5511900000001"})  # not committed
    with pytest.raises(DBAPIError, match="lock timeout"):
        other_connection.execute(text("DELETE FROM workspaces WHERE id = :ws"), {"ws": owner.workspace_id})
    other_connection.rollback()
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(Lead)) == 1


@pytest.mark.parametrize("updated_first", [False, True], ids=["tag only", "lead updated, then tagged"])
def test_a_lead_can_not_be_deleted_under_a_tag_being_written(
    owner: factories.Person, other_connection: Connection, updated_first: bool
) -> None:
    """The tag's check locks the lead FOR KEY SHARE; after an update of the lead in the same
    transaction, the update's stronger lock holds the delete off as well."""
    lead_id = factories.lead(owner, "+5511900000001")
    if updated_first:
        db.session.execute(text("UPDATE leads SET name = 'Bia' WHERE id = :id"), {"id": lead_id})
    db.session.execute(
        text(NEW_TAG), {"ws": owner.workspace_id, "lead": lead_id, "name": "vip", "key": "vip"}
    )
    with pytest.raises(DBAPIError, match="lock timeout"):
        other_connection.execute(text("DELETE FROM leads WHERE id = :id"), {"id": lead_id})
    other_connection.rollback()
    db.session.commit()
    assert _tags(lead_id) == ["vip"]


def test_the_keys_of_leads_and_workspaces_never_change(two_workspaces: tuple[factories.Person, ...]) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's foreign keys decide that on SQLite")
    acme, globex = two_workspaces
    lead_id = factories.lead(acme, "+5511900000001")
    _refused("UPDATE leads SET workspace_id = :ws WHERE id = :id", ws=globex.workspace_id, id=lead_id)
    _refused("UPDATE leads SET id = :new WHERE id = :id", new=lead_id + 1000, id=lead_id)
    db.session.execute(
        text("UPDATE leads SET name = 'Bia', workspace_id = workspace_id WHERE id = :id"), {"id": lead_id}
    )
    db.session.commit()
    assert db.session.get(Lead, lead_id).name == "Bia"  # type: ignore[union-attr]
    # A workspace that nothing else refers to (no members): only its leads keep its id.
    bare = Workspace(name="Bare")
    db.session.add(bare)
    db.session.commit()
    db.session.execute(text(NEW_LEAD), {"ws": bare.id, "phone": "+5511900000002"})
    db.session.commit()
    with pytest.raises(IntegrityError, match="while it has leads"):
        db.session.execute(
            text("UPDATE workspaces SET id = :new WHERE id = :ws"), {"new": 9000, "ws": bare.id}
        )
    db.session.rollback()
    db.session.execute(text("DELETE FROM leads WHERE workspace_id = :ws"), {"ws": bare.id})
    db.session.execute(text("UPDATE workspaces SET id = :new WHERE id = :ws"), {"new": 9000, "ws": bare.id})
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(Workspace).where(Workspace.id == 9000)) == 1


def test_the_triggers_find_the_tables_whatever_the_callers_search_path(owner: factories.Person) -> None:
    """Each function looks in the tables' schema ("$user" would be each caller's own)."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no triggers for these keys")
    schema = db.session.scalar(text("SELECT current_schema()"))
    settings = db.session.execute(
        text("SELECT proname, proconfig FROM pg_proc WHERE proname LIKE 'zapdesk_%'")
    ).all()
    assert len(settings) == 5
    assert {tuple(config) for _name, config in settings} == {(f"search_path={schema}, pg_temp",)}
    db.session.execute(text("SET LOCAL search_path = pg_catalog"))
    with pytest.raises(IntegrityError):
        db.session.execute(
            text(NEW_LEAD.replace("INTO leads", f'INTO "{schema}".leads')),
            {"ws": 0, "phone": "+5511900000001"},
        )
    db.session.rollback()
