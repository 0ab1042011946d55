"""lead_imports.parts_merged: on PostgreSQL a batch's leads are merged as parts on separate
connections at once, each part in its own transaction; the bits say which parts of the batch at
the checkpoint (processed_rows) are committed, so a run that stops between them resumes with the
others; parts_rows and parts_count say how that batch was cut (its rows, its parts), so the
resume cuts it the same way

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 23:40:00.000000

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


COLUMNS = ('parts_merged', 'parts_rows', 'parts_count')


def upgrade():
    for name in COLUMNS:
        op.add_column('lead_imports', sa.Column(name, sa.Integer(), server_default='0', nullable=False))


def downgrade():
    # Not batch mode: on SQLite that recreates the table, and dropping the old one would take
    # the imports' error rows with it (their foreign key cascades). SQLite 3.35+ drops columns.
    for name in COLUMNS:
        op.execute(f'ALTER TABLE lead_imports DROP COLUMN {name}')
