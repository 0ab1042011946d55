"""lead_tags: one foreign key, (workspace_id, lead_id) to leads (workspace_id, id), instead of
one to workspaces and one to leads. A tag row's lead and workspace are checked together (the tag
can't sit in another workspace than its lead), the workspace's cascade reaches the tags through
its leads, and inserting a tag fires one key check instead of two: those checks were ~20% of
PostgreSQL's CPU in a 1M-row import (bench/import_leads.py). leads (workspace_id, id) becomes a
unique index so that it can be the key's target (it already was an index on those columns), and
the tags' unique (lead_id, key) becomes (lead_id, workspace_id, key): the same rows are unique
(a lead has one workspace), and lookups by the key's two columns (a lead's tags, the cascade)
find their index on SQLite, which keeps no statistics to choose it over (workspace_id, key).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05 02:20:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

LEAD_FK = 'fk_lead_tags_lead_id_leads'
WORKSPACE_FK = 'fk_lead_tags_workspace_id_workspaces'
COMPOSITE_FK = 'fk_lead_tags_workspace_id_leads'
OLD_UNIQUE = 'uq_lead_tags_lead_id_key'
UNIQUE = 'uq_lead_tags_lead_id_workspace_id_key'


def upgrade():
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.create_index('uq_leads_workspace_id_id', ['workspace_id', 'id'], unique=True)
        batch_op.drop_index('ix_leads_workspace_id_id')
    # Every tag is written with its lead's workspace; a row that says otherwise would stop the key.
    op.execute(
        "UPDATE lead_tags SET workspace_id = (SELECT l.workspace_id FROM leads l WHERE l.id = lead_tags.lead_id)"
        " WHERE workspace_id <> (SELECT l.workspace_id FROM leads l WHERE l.id = lead_tags.lead_id)"
    )
    with op.batch_alter_table('lead_tags', schema=None) as batch_op:
        batch_op.drop_constraint(LEAD_FK, type_='foreignkey')
        batch_op.drop_constraint(WORKSPACE_FK, type_='foreignkey')
        batch_op.drop_constraint(OLD_UNIQUE, type_='unique')
        batch_op.create_unique_constraint(UNIQUE, ['lead_id', 'workspace_id', 'key'])
        batch_op.create_foreign_key(
            COMPOSITE_FK, 'leads', ['workspace_id', 'lead_id'], ['workspace_id', 'id'], ondelete='CASCADE'
        )


def downgrade():
    with op.batch_alter_table('lead_tags', schema=None) as batch_op:
        batch_op.drop_constraint(COMPOSITE_FK, type_='foreignkey')
        batch_op.drop_constraint(UNIQUE, type_='unique')
        batch_op.create_unique_constraint(OLD_UNIQUE, ['lead_id', 'key'])
        batch_op.create_foreign_key(LEAD_FK, 'leads', ['lead_id'], ['id'], ondelete='CASCADE')
        batch_op.create_foreign_key(WORKSPACE_FK, 'workspaces', ['workspace_id'], ['id'], ondelete='CASCADE')
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.create_index('ix_leads_workspace_id_id', ['workspace_id', 'id'], unique=False)
        batch_op.drop_index('uq_leads_workspace_id_id')
