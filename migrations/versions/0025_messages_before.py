"""A thread's older pages through one function, planned once per connection (PostgreSQL).

A thread's older page selects the conversation's messages before the cursor, newest first. Made
for the cursor, its plan leaves out the monthly partitions newer than it, so it always looks
cheaper than a generic plan and PostgreSQL planned it on every scroll (about 0.8 ms, more than it
took to run, on bench/inbox.py's database). A generic plan made for an average conversation sorts
instead of reading the index in order, which on a conversation of 100,000 messages read and
sorted every older message (530 ms a page). Setting the planner for the statement from the app
cost two more statements a page, which made pages slower (BENCHMARKS.md, 2026-12-06).

``messages_before`` runs that statement with the planner set for it alone: the generic plan,
made once per connection (PL/pgSQL keeps it), with sorting ruled out, so it reads each
partition's (conversation_id, created_at DESC, id DESC) index in order and leaves out the newer
partitions as it starts. The settings hold only while the function runs. Like every generic plan
over ``messages`` (the thread's first page's too), it locks each partition as it starts, those
it leaves out included. ``ROWS 101``: a page and one more at most. SQLite has no function and
keeps the plain statement; the conditions are those of crm.pagination.keyset_page.

The function returns the row type of ``messages``: columns added to the table come with it, but
a migration that replaces the table (as 0017 did) must drop the function first and create it
again after.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06 10:00:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0025'
down_revision = '0024'
branch_labels = None
depends_on = None

CREATE = """
CREATE FUNCTION messages_before(
    p_workspace_id integer, p_conversation_id integer, p_created_at timestamptz, p_id bigint,
    p_limit integer
) RETURNS SETOF messages
LANGUAGE plpgsql STABLE ROWS 101
SET plan_cache_mode = force_generic_plan
SET enable_sort = off
AS $$
BEGIN
    RETURN QUERY
    SELECT * FROM messages m
    WHERE m.workspace_id = p_workspace_id AND m.conversation_id = p_conversation_id
      AND m.created_at <= p_created_at
      AND (m.created_at < p_created_at OR (m.created_at = p_created_at AND m.id < p_id))
    ORDER BY m.created_at DESC, m.id DESC
    LIMIT p_limit;
END
$$
"""


def upgrade():
    if op.get_context().dialect.name == "postgresql":
        op.execute(CREATE)


def downgrade():
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS messages_before(integer, integer, timestamptz, bigint, integer)")
