"""Leads' search indexes on PostgreSQL: what a search needs, at less cost per lead written.

Before: trigrams of the name, email and notes together, and trigrams of the phone, two GIN
indexes that an import of a million leads spent ~40% of PostgreSQL's time on (bench/import_leads.py:
without the email's and the phone's trigrams, 34 s became 25 s). Now:
- trigrams of the name and notes, lower-cased and without accents (crm.db.folded), so that
  "joao" finds "João";
- the email's start, lower-cased (a btree with text_pattern_ops, for LIKE 'ana@%', and the
  statistics that tell the planner how few leads such a search finds);
- a phone's last four digits (a btree with the workspace), for searches by the end of a number;
  searches by its start use the unique (workspace_id, phone) index.
The indexes are built CONCURRENTLY, outside the migration's transaction: building a trigram index
over a million leads takes a while, and leads keep being written meanwhile (webhooks). Without
the pg_trgm extension (see 0010) there is no trigram index and the search scans. SQLite searches
by scanning and gets none of these.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05 11:30:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None

# The expressions of crm.leads.search (search_text, _phone_tail) and crm.db (FOLD_FROM, FOLD_TO),
# as they are at this revision: a query uses an index only when its expression is the same
# (tests/leads/test_leads.py compares them).
FOLD_FROM = "áàâãäåāçćčéèêëēęěíìîïīñńóòôõöøōśšúùûüūůýÿźżž" + "\u0300\u0301\u0302\u0303\u0308\u0327"
FOLD_TO = "aaaaaaaccceeeeeeeiiiiinnooooooossuuuuuuyyzzz"
SEARCH_TEXT = f"translate(lower(name || ' ' || notes), '{FOLD_FROM}', '{FOLD_TO}')"
OLD_SEARCH_TEXT = "lower(name || ' ' || coalesce(email, '') || ' ' || notes)"


def _trigram_ops():
    """pg_trgm's operator class, schema-qualified, or None when the extension is not there."""
    where = op.get_bind().exec_driver_sql(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'pg_trgm'"
    ).scalar()
    return f'"{where}".gin_trgm_ops' if where else None


def _run_outside_the_transaction(statements):
    # CREATE/DROP INDEX CONCURRENTLY can't run in a transaction. A build that stopped half way
    # leaves an invalid index: each is dropped first, so running the migration again mends it.
    with op.get_context().autocommit_block():
        for statement in statements:
            op.execute(statement)


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    ops = _trigram_ops()
    statements = [
        "DROP INDEX CONCURRENTLY IF EXISTS ix_leads_workspace_id_email",
        # Not partial (WHERE email IS NOT NULL): the planner reads the statistics of an index's
        # expression only from a whole-table index, and without them it guessed that a search
        # matched 0.5% of the leads and read the whole table for 51 of them (bench/leads.py).
        "CREATE INDEX CONCURRENTLY ix_leads_workspace_id_email ON leads (workspace_id, lower(email) text_pattern_ops)",
        "DROP INDEX CONCURRENTLY IF EXISTS ix_leads_workspace_id_phone_tail",
        "CREATE INDEX CONCURRENTLY ix_leads_workspace_id_phone_tail ON leads (workspace_id, right(phone, 4))",
    ]
    if ops:
        statements += [
            "DROP INDEX CONCURRENTLY IF EXISTS ix_leads_search_fold_trgm",
            f"CREATE INDEX CONCURRENTLY ix_leads_search_fold_trgm ON leads USING gin (({SEARCH_TEXT}) {ops})",
        ]
    statements += [
        "DROP INDEX CONCURRENTLY IF EXISTS ix_leads_search_trgm",
        "DROP INDEX CONCURRENTLY IF EXISTS ix_leads_phone_trgm",
    ]
    _run_outside_the_transaction(statements)


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    ops = _trigram_ops()
    statements = []
    if ops:
        statements += [
            "DROP INDEX CONCURRENTLY IF EXISTS ix_leads_search_trgm",
            f"CREATE INDEX CONCURRENTLY ix_leads_search_trgm ON leads USING gin (({OLD_SEARCH_TEXT}) {ops})",
            "DROP INDEX CONCURRENTLY IF EXISTS ix_leads_phone_trgm",
            f"CREATE INDEX CONCURRENTLY ix_leads_phone_trgm ON leads USING gin (phone {ops})",
        ]
    statements += [
        "DROP INDEX CONCURRENTLY IF EXISTS ix_leads_search_fold_trgm",
        "DROP INDEX CONCURRENTLY IF EXISTS ix_leads_workspace_id_phone_tail",
        "DROP INDEX CONCURRENTLY IF EXISTS ix_leads_workspace_id_email",
    ]
    _run_outside_the_transaction(statements)
