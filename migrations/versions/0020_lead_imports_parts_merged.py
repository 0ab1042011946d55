"""lead_imports.parts_merged: on PostgreSQL a batch's leads are merged as parts on separate
connections at once, each part in its own transaction; the bits say which parts of the batch at
the checkpoint (processed_rows) are committed, so a run that stops between them resumes with the
others

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


def upgrade():
    with op.batch_alter_table('lead_imports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parts_merged', sa.Integer(), server_default='0', nullable=False))


def downgrade():
    with op.batch_alter_table('lead_imports', schema=None) as batch_op:
        batch_op.drop_column('parts_merged')
