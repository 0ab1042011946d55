"""broadcast_recipients.broadcast_id without its foreign key: the recipients are written in the
same transaction as their broadcast, broadcasts are never deleted (only cancelled), and the key's
check, one trigger call per row, was 0.6-0.8 s of the 1.5-1.85 s that writing 100,000 recipients
took (bench/broadcast.py)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 18:20:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None

FK = 'fk_broadcast_recipients_broadcast_id_broadcasts'


def upgrade():
    with op.batch_alter_table('broadcast_recipients', schema=None) as batch_op:
        batch_op.drop_constraint(FK, type_='foreignkey')


def downgrade():
    # Recipients whose broadcast is gone (deleted by hand meanwhile) would stop the key: they go.
    op.execute("DELETE FROM broadcast_recipients WHERE broadcast_id NOT IN (SELECT id FROM broadcasts)")
    with op.batch_alter_table('broadcast_recipients', schema=None) as batch_op:
        batch_op.create_foreign_key(FK, 'broadcasts', ['broadcast_id'], ['id'], ondelete='CASCADE')
