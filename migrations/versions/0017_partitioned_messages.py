"""Messages partitioned by month on PostgreSQL; provider message ids unique in message_keys

On PostgreSQL ``messages`` becomes a table partitioned by RANGE (created_at), one partition per
month (``messages_pYYYY_MM``), with ``messages_past`` (MINVALUE up to the first month) and
``messages_future`` (after the last month, up to MAXVALUE) for whatever falls outside them: the
ranges cover every time without a DEFAULT partition, which would stop PostgreSQL from reading
partitions in order (newest first, stopping once a page is full). The primary key is
(id, created_at) and every index is declared on the parent, so each partition has its own. A unique index can't span partitions without the partition key, so the uniqueness of
(account_id, provider_message_id) moves to ``message_keys`` on both engines (one code path), and
the foreign keys that pointed at ``messages.id`` (outbox, broadcast_recipients) are dropped.
The existing rows move into the partitioned table; the sequence keeps its values. SQLite keeps a
plain table.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 12:10:00

"""
from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

MONTHS_AHEAD = 3  # the same as crm.ops.partitions.MONTHS_AHEAD at the time of writing
MONTHS_BACK = 24  # older rows of an existing database go to messages_past

COLUMNS = (
    "id, workspace_id, conversation_id, account_id, direction, type, text, status, provider, "
    "provider_message_id, author, author_user_id, error_code, error_title, created_at, payload, "
    "reply_to, media_id, media_file_id"
)

COLUMN_DDL = """
    id integer NOT NULL DEFAULT nextval('messages_id_seq'::regclass),
    workspace_id integer NOT NULL,
    conversation_id integer NOT NULL,
    account_id integer NOT NULL,
    direction varchar(3) NOT NULL,
    type varchar(24) NOT NULL,
    text text NOT NULL,
    status varchar(16) NOT NULL,
    provider varchar(16) NOT NULL,
    provider_message_id varchar(128),
    author varchar(16) NOT NULL,
    author_user_id integer,
    error_code varchar(32),
    error_title text,
    created_at timestamp with time zone NOT NULL,
    payload json,
    reply_to varchar(128),
    media_id varchar(128),
    media_file_id integer,
    CONSTRAINT fk_messages_account_id_whatsapp_accounts FOREIGN KEY (account_id)
        REFERENCES whatsapp_accounts (id) ON DELETE CASCADE,
    CONSTRAINT fk_messages_author_user_id_users FOREIGN KEY (author_user_id)
        REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT fk_messages_conversation_id_conversations FOREIGN KEY (conversation_id)
        REFERENCES conversations (id) ON DELETE CASCADE,
    CONSTRAINT fk_messages_media_file_id_media_files FOREIGN KEY (media_file_id)
        REFERENCES media_files (id) ON DELETE SET NULL,
    CONSTRAINT fk_messages_workspace_id_workspaces FOREIGN KEY (workspace_id)
        REFERENCES workspaces (id) ON DELETE CASCADE
"""

INDEXES = (
    "CREATE INDEX ix_messages_conversation_id_created_at_id ON messages "
    "(conversation_id, created_at DESC, id DESC)",
    "CREATE INDEX ix_messages_media_file_id ON messages (media_file_id) WHERE media_file_id IS NOT NULL",
    "CREATE INDEX ix_messages_workspace_id ON messages (workspace_id)",
)
INDEX_NAMES = (
    "ix_messages_conversation_id_created_at_id",
    "ix_messages_media_file_id",
    "ix_messages_workspace_id",
)

REFERENCING = (
    ("outbox", "fk_outbox_message_id_messages", "CASCADE"),
    ("broadcast_recipients", "fk_broadcast_recipients_message_id_messages", "SET NULL"),
)


def _month(year: int, month: int) -> datetime:
    return datetime(year + (month - 1) // 12, (month - 1) % 12 + 1, 1, tzinfo=UTC)


def _partition_months(bind) -> list[datetime]:
    """Every month from the oldest message's (at most MONTHS_BACK back) to MONTHS_AHEAD after
    this one."""
    oldest = bind.execute(sa.text("SELECT min(created_at) FROM messages_unpartitioned")).scalar()
    now = datetime.now(UTC)
    start = oldest.astimezone(UTC) if oldest is not None and oldest < now else now
    months = []
    at = max(_month(start.year, start.month), _month(now.year, now.month - MONTHS_BACK))
    last = _month(now.year, now.month + MONTHS_AHEAD)
    while at <= last:
        months.append(at)
        at = _month(at.year, at.month + 1)
    return months


def upgrade():
    op.create_table('message_keys',
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('provider_message_id', sa.String(length=128), nullable=False),
    sa.Column('message_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['whatsapp_accounts.id'], name=op.f('fk_message_keys_account_id_whatsapp_accounts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', 'provider_message_id', name=op.f('pk_message_keys'))
    )
    for table, fk, _ in REFERENCING:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(fk, type_='foreignkey')
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _partition()
    else:
        with op.batch_alter_table('messages', schema=None) as batch_op:
            batch_op.drop_constraint('uq_messages_account_id_provider_message_id', type_='unique')
    op.execute(
        "INSERT INTO message_keys (account_id, provider_message_id, message_id, created_at) "
        "SELECT account_id, provider_message_id, id, created_at FROM messages "
        "WHERE provider_message_id IS NOT NULL"
    )


def _partition():
    bind = op.get_bind()
    op.execute("ALTER TABLE messages RENAME TO messages_unpartitioned")
    op.execute("ALTER TABLE messages_unpartitioned DROP CONSTRAINT uq_messages_account_id_provider_message_id")
    for name in INDEX_NAMES:
        op.execute(f"DROP INDEX {name}")
    op.execute("ALTER TABLE messages_unpartitioned RENAME CONSTRAINT pk_messages TO pk_messages_unpartitioned")
    op.execute("ALTER TABLE messages_unpartitioned ALTER COLUMN id DROP DEFAULT")
    op.execute("ALTER SEQUENCE messages_id_seq OWNED BY NONE")
    op.execute(
        f"CREATE TABLE messages ({COLUMN_DDL}, CONSTRAINT pk_messages PRIMARY KEY (id, created_at)) "
        "PARTITION BY RANGE (created_at)"
    )
    op.execute("ALTER SEQUENCE messages_id_seq OWNED BY messages.id")
    for ddl in INDEXES:
        op.execute(ddl)
    months = _partition_months(bind)
    first, last = months[0], _month(months[-1].year, months[-1].month + 1)
    op.execute(
        f"CREATE TABLE messages_past PARTITION OF messages FOR VALUES FROM (MINVALUE) TO ('{first.isoformat()}')"
    )
    for start in months:
        end = _month(start.year, start.month + 1)
        op.execute(
            f"CREATE TABLE messages_p{start:%Y_%m} PARTITION OF messages "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
    op.execute(
        f"CREATE TABLE messages_future PARTITION OF messages FOR VALUES FROM ('{last.isoformat()}') TO (MAXVALUE)"
    )
    op.execute(f"INSERT INTO messages ({COLUMNS}) SELECT {COLUMNS} FROM messages_unpartitioned")
    op.execute("DROP TABLE messages_unpartitioned")
    op.execute("ANALYZE messages")


def _unpartition():
    op.execute("ALTER TABLE messages RENAME TO messages_partitioned")
    for name in INDEX_NAMES:
        op.execute(f"DROP INDEX {name}")
    op.execute("ALTER TABLE messages_partitioned RENAME CONSTRAINT pk_messages TO pk_messages_partitioned")
    op.execute("ALTER TABLE messages_partitioned ALTER COLUMN id DROP DEFAULT")
    op.execute("ALTER SEQUENCE messages_id_seq OWNED BY NONE")
    op.execute(
        f"CREATE TABLE messages ({COLUMN_DDL}, CONSTRAINT pk_messages PRIMARY KEY (id), "
        "CONSTRAINT uq_messages_account_id_provider_message_id UNIQUE (account_id, provider_message_id))"
    )
    op.execute("ALTER SEQUENCE messages_id_seq OWNED BY messages.id")
    for ddl in INDEXES:
        op.execute(ddl)
    op.execute(f"INSERT INTO messages ({COLUMNS}) SELECT {COLUMNS} FROM messages_partitioned")
    op.execute("DROP TABLE messages_partitioned")  # and its partitions


def downgrade():
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _unpartition()
    else:
        with op.batch_alter_table('messages', schema=None) as batch_op:
            batch_op.create_unique_constraint(
                'uq_messages_account_id_provider_message_id', ['account_id', 'provider_message_id']
            )
    # Rows of deleted messages may be left in the tables that referenced them without a key.
    op.execute("DELETE FROM outbox WHERE message_id NOT IN (SELECT id FROM messages)")
    op.execute(
        "UPDATE broadcast_recipients SET message_id = NULL "
        "WHERE message_id IS NOT NULL AND message_id NOT IN (SELECT id FROM messages)"
    )
    for table, fk, ondelete in REFERENCING:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_foreign_key(fk, 'messages', ['message_id'], ['id'], ondelete=ondelete)
    op.drop_table('message_keys')
