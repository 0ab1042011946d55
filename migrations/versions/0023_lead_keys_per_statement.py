"""Leads' two busiest foreign keys checked once per statement on PostgreSQL, by triggers.

leads.workspace_id → workspaces and lead_tags (workspace_id, lead_id) → leads (workspace_id, id)
were checked by PostgreSQL once per row written: a query and a row lock each. A 1M-row import
writes a million leads and hundreds of thousands of tags, and with its two parts at once every
lead's check locked the same workspace row. With these triggers instead, PostgreSQL's CPU
was 0.91x (bench/import_leads.py, BENCHMARKS.md).
The keys are now triggers that check all the rows of a statement at once, and keep what the keys
kept:
- a lead names a workspace that exists, and that can't be deleted until the lead is committed
  (the workspace row is locked FOR KEY SHARE once per statement);
- a tag names a lead of its own workspace, which can't be deleted until the tag is committed
  (its lead is locked FOR KEY SHARE, as the key did);
- deleting a workspace deletes its leads, deleting leads deletes their tags (the cascades);
- a lead's id and workspace never change (nothing changes them), nor does a workspace's id while
  it has leads.
What real keys did and these don't: TRUNCATE of workspaces or leads no longer reaches leads or
tags (the application never truncates); a workspace deleted in a REPEATABLE READ transaction
misses leads committed after its snapshot (the application deletes none); disabling user
triggers disables them. SQLite keeps the keys: its import writes one row at a time anyway.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-05 14:30:00.000000

"""

from alembic import context, op

# revision identifiers, used by Alembic.
revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

LEADS_KEY = "fk_leads_workspace_id_workspaces"
TAGS_KEY = "fk_lead_tags_workspace_id_leads"

# A transition table has no statistics beyond its size: lookups go through leads' primary key
# (id = ANY), or the planner may read every lead to join a few thousand tags.
UPGRADE = r"""
CREATE FUNCTION zapdesk_leads_check_workspace() RETURNS trigger LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
BEGIN
    PERFORM 1
    FROM (SELECT DISTINCT workspace_id FROM added) a
    LEFT JOIN (
        SELECT w.id FROM workspaces w WHERE w.id IN (SELECT workspace_id FROM added) FOR KEY SHARE
    ) w ON w.id = a.workspace_id
    WHERE w.id IS NULL;
    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'insert on table "leads" violates the key "fk_leads_workspace_id_workspaces"',
            DETAIL = 'A lead''s workspace is not in "workspaces".';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER leads_workspace_key AFTER INSERT ON leads
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION zapdesk_leads_check_workspace();

CREATE FUNCTION zapdesk_lead_tags_check_lead() RETURNS trigger LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
DECLARE
    wanted bigint;
    present bigint;
BEGIN
    SELECT count(*) INTO wanted FROM (SELECT DISTINCT workspace_id, lead_id FROM added) a;
    SELECT count(*) INTO present FROM (
        SELECT 1 FROM leads l
        WHERE l.id = ANY (ARRAY(SELECT lead_id FROM added))
            AND EXISTS (SELECT 1 FROM added a WHERE a.lead_id = l.id AND a.workspace_id = l.workspace_id)
        FOR KEY SHARE OF l
    ) locked;
    IF present <> wanted THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'insert or update on table "lead_tags" violates the key "fk_lead_tags_workspace_id_leads"',
            DETAIL = 'A tag''s lead is not in "leads" with the tag''s workspace.';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER lead_tags_lead_key AFTER INSERT ON lead_tags
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION zapdesk_lead_tags_check_lead();
CREATE TRIGGER lead_tags_lead_key_on_update AFTER UPDATE ON lead_tags
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION zapdesk_lead_tags_check_lead();

CREATE FUNCTION zapdesk_leads_delete_tags() RETURNS trigger LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
BEGIN
    DELETE FROM lead_tags t
    WHERE t.lead_id = ANY (ARRAY(SELECT id FROM removed))
        AND EXISTS (SELECT 1 FROM removed r WHERE r.id = t.lead_id AND r.workspace_id = t.workspace_id);
    RETURN NULL;
END $$;

CREATE TRIGGER leads_delete_tags AFTER DELETE ON leads
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION zapdesk_leads_delete_tags();

CREATE FUNCTION zapdesk_workspaces_delete_leads() RETURNS trigger LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
BEGIN
    DELETE FROM leads WHERE workspace_id = OLD.id;
    RETURN NULL;
END $$;

CREATE TRIGGER workspaces_delete_leads AFTER DELETE ON workspaces
    FOR EACH ROW EXECUTE FUNCTION zapdesk_workspaces_delete_leads();

CREATE FUNCTION zapdesk_keys_never_change() RETURNS trigger LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
BEGIN
    IF TG_TABLE_NAME = 'leads' THEN
        RAISE foreign_key_violation USING MESSAGE = 'a lead''s id and workspace never change';
    END IF;
    IF EXISTS (SELECT 1 FROM leads WHERE workspace_id = OLD.id) THEN
        RAISE foreign_key_violation USING MESSAGE = 'a workspace''s id can''t change while it has leads';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER leads_keys_never_change BEFORE UPDATE OF id, workspace_id ON leads
    FOR EACH ROW WHEN (OLD.id <> NEW.id OR OLD.workspace_id <> NEW.workspace_id)
    EXECUTE FUNCTION zapdesk_keys_never_change();
CREATE TRIGGER workspaces_id_never_changes BEFORE UPDATE OF id ON workspaces
    FOR EACH ROW WHEN (OLD.id <> NEW.id) EXECUTE FUNCTION zapdesk_keys_never_change();
"""

DOWNGRADE = """
DROP TRIGGER workspaces_id_never_changes ON workspaces;
DROP TRIGGER leads_keys_never_change ON leads;
DROP FUNCTION zapdesk_keys_never_change();
DROP TRIGGER workspaces_delete_leads ON workspaces;
DROP FUNCTION zapdesk_workspaces_delete_leads();
DROP TRIGGER leads_delete_tags ON leads;
DROP FUNCTION zapdesk_leads_delete_tags();
DROP TRIGGER lead_tags_lead_key_on_update ON lead_tags;
DROP TRIGGER lead_tags_lead_key ON lead_tags;
DROP FUNCTION zapdesk_lead_tags_check_lead();
DROP TRIGGER leads_workspace_key ON leads;
DROP FUNCTION zapdesk_leads_check_workspace();
"""


def _schema():
    """The schema the tables are in, quoted: the functions look for them there whatever the
    caller's search_path ("$user" would be each caller's own schema)."""
    if context.is_offline_mode():
        return "public"
    name = op.get_bind().exec_driver_sql("SELECT current_schema()").scalar()
    return '"' + name.replace('"', '""') + '"'


def upgrade():
    if op.get_context().dialect.name != "postgresql":
        return
    op.drop_constraint(TAGS_KEY, "lead_tags", type_="foreignkey")
    op.drop_constraint(LEADS_KEY, "leads", type_="foreignkey")
    op.execute(UPGRADE.replace("{schema}", _schema()))  # one script: psycopg runs its statements in turn


def downgrade():
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(DOWNGRADE)
    # Rows the triggers would not have let in can't be there; the keys are checked as they come back.
    op.create_foreign_key(LEADS_KEY, "leads", "workspaces", ["workspace_id"], ["id"], ondelete="CASCADE")
    op.create_foreign_key(
        TAGS_KEY,
        "lead_tags",
        "leads",
        ["workspace_id", "lead_id"],
        ["workspace_id", "id"],
        ondelete="CASCADE",
    )
