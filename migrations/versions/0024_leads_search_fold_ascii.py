"""Leads' trigram index folds accents only in texts that have a character beyond ASCII.

translate() compares each character of a text with each of the ~50 letters it replaces, so the
index's expression of 0022 cost PostgreSQL 2.8-3.1 s per million names, ~7% of its CPU in a
1M-row import (bench/import_leads.py). In a UTF-8 database a text of one byte per character is
ASCII, has none of those letters, and lower() alone gives the same text: 0.6 s per million
names. (LATIN1 and the like refuse 0022's letters; in SQL_ASCII, which keeps bytes unchecked,
accents were never folded as letters, and a text with one now folds to lower() alone.) The
expression is now

    CASE WHEN octet_length(t) = char_length(t) THEN lower(t) ELSE translate(lower(t), …) END

with t the name and notes, which is what crm.db.folded writes for PostgreSQL (a query uses the
index only with the same expression; tests/leads/test_leads.py compares them). Every text folds
as before, so searches find the same leads.

The new index is built CONCURRENTLY under a temporary name before the old one is dropped, so
leads keep being written while it builds, and the code before this revision keeps its index
(compose.yaml and `make run` start the new code once the migrations are done; code of this
revision running before then searches without the index). A build that stopped half way leaves
an invalid index, dropped when the migration runs again. Without pg_trgm (see 0010) there is no
trigram index and nothing to do. SQLite has none. Offline (`--sql`), pg_trgm is taken to be in
the public schema.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-05 18:00:00.000000

"""
from alembic import context, op

# revision identifiers, used by Alembic.
revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None

# crm.db's FOLD_FROM, FOLD_TO as they are at this revision (the same as 0022's).
FOLD_FROM = "áàâãäåāçćčéèêëēęěíìîïīñńóòôõöøōśšúùûüūůýÿźżž" + "\u0300\u0301\u0302\u0303\u0308\u0327"
FOLD_TO = "aaaaaaaccceeeeeeeiiiiinnooooooossuuuuuuyyzzz"
TEXT = "name || ' ' || notes"
TRANSLATED = f"translate(lower({TEXT}), '{FOLD_FROM}', '{FOLD_TO}')"
SEARCH_TEXT = (
    f"CASE WHEN octet_length({TEXT}) = char_length({TEXT}) THEN lower({TEXT}) ELSE {TRANSLATED} END"
)
INDEX = "ix_leads_search_fold_trgm"


def _trigram_ops():
    """pg_trgm's operator class, schema-qualified, or None when the extension is not there."""
    if context.is_offline_mode():
        return '"public".gin_trgm_ops'
    where = op.get_bind().exec_driver_sql(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'pg_trgm'"
    ).scalar()
    return f'"{where}".gin_trgm_ops' if where else None


def _replace_index(expression):
    if op.get_context().dialect.name != "postgresql":
        return
    ops = _trigram_ops()
    if not ops:
        return
    building = f"{INDEX}_new"
    with op.get_context().autocommit_block():  # CONCURRENTLY can't run in a transaction
        for statement in (
            f"DROP INDEX CONCURRENTLY IF EXISTS {building}",
            f"CREATE INDEX CONCURRENTLY {building} ON leads USING gin (({expression}) {ops})",
            f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}",
            f"ALTER INDEX {building} RENAME TO {INDEX}",
        ):
            op.execute(statement)


def upgrade():
    _replace_index(SEARCH_TEXT)


def downgrade():
    _replace_index(TRANSLATED)
