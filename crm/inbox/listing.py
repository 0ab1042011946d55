"""The conversation list: the inbox's filters and search, keyset pages, and each row's preview
(the conversation's newest message)."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    Row,
    Select,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    true,
)
from sqlalchemy.orm import aliased, contains_eager

from crm.db import LIKE_ESCAPE, fold, folded, like_escaped, written
from crm.extensions import db
from crm.inbox.bubbles import ROW_FIELDS
from crm.inbox.models import Conversation, Message
from crm.leads.models import Lead, LeadTag
from crm.pagination import Page, keyset_page
from crm.tenancy import scoped


def list_conversations(workspace_id: int, limit: int, cursor: str | None) -> Page[Conversation]:
    stmt = scoped(select(Conversation), Conversation, workspace_id)
    return keyset_page(stmt, [Conversation.last_message_at, Conversation.id], limit, cursor)


def filtered_conversations(
    workspace_id: int,
    *,
    user_id: int,
    view: str = "all",
    status: str = "open",
    q: str = "",
    account_id: int | None = None,
    tag: str = "",
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Conversation]:
    """The inbox list: newest activity first, keyset-paginated, filtered as the agent chose.
    The search looks at the customer's name and phone and, from 3 characters, at the messages."""
    from crm.leads.phones import digits_of
    from crm.leads.services import tag_key

    stmt = (
        scoped(select(Conversation), Conversation, workspace_id)
        .join(Lead, Lead.id == Conversation.lead_id)
        .where(Lead.deleted_at.is_(None))  # a lead in the trash is out of the inbox until they write
    )
    if view == "mine":
        stmt = stmt.where(Conversation.assignee_id == user_id)
    elif view == "unassigned":
        stmt = stmt.where(Conversation.assignee_id.is_(None))
    elif view == "unread":
        stmt = stmt.where(Conversation.unread_count > 0)
    if status in ("open", "closed"):
        stmt = stmt.where(Conversation.status == written(status))
    if account_id is not None:
        stmt = stmt.where(Conversation.account_id == account_id)
    key = tag_key(tag)
    if key:
        stmt = stmt.where(exists().where(and_(LeadTag.lead_id == Conversation.lead_id, LeadTag.key == key)))
    q = q.replace("\x00", "").strip()
    if q:
        # Names accents and case aside, as in the leads' search; messages case aside only: they
        # are scanned, and folding accents (translate()) costs ten times what lowering does.
        digits = digits_of(q)
        conditions: list[ColumnElement[bool]] = [
            folded(Lead.name).like(f"%{like_escaped(fold(q))}%", escape=LIKE_ESCAPE)
        ]
        if len(digits) >= 3:
            conditions.append(Lead.phone.like(f"%{digits}%"))
        if len(q) >= 3:
            conditions.append(
                exists().where(
                    Message.conversation_id == Conversation.id,
                    func.lower(Message.text).like(f"%{like_escaped(q.lower())}%", escape=LIKE_ESCAPE),
                )
            )
        stmt = stmt.where(or_(*conditions))
    # The join above loads each customer; their tags come in one more statement.
    stmt = stmt.options(contains_eager(Conversation.lead).selectinload(Lead.tags))
    return keyset_page(stmt, [Conversation.last_message_at, Conversation.id], limit, cursor)


# What a list row shows of a conversation's last message, with its ids: plain columns, no ORM
# object to build for each of the 50 rows.
_PREVIEW_COLUMNS = (
    Message.id,
    Message.conversation_id,
    *(getattr(Message, name) for name in ROW_FIELDS["preview"]),
)


def last_messages(workspace_id: int, conversation_ids: list[int]) -> dict[int, Row[Any]]:
    """The newest message of each of the workspace's conversations (the columns a list row
    shows), in one statement: for each conversation an indexed "newest first, LIMIT 1" subquery
    picks the id, then the rows are read by key."""
    if not conversation_ids:
        return {}
    if db.session.get_bind().dialect.name == "postgresql":
        return _last_messages_by_key(workspace_id, conversation_ids)
    newest = (
        select(Message.id)
        .where(Message.conversation_id == Conversation.id)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
        .correlate(Conversation)
        .scalar_subquery()
    )
    ids = select(newest).where(Conversation.id.in_(conversation_ids))
    rows = db.session.execute(
        select(*_PREVIEW_COLUMNS).where(Message.id.in_(ids), Message.workspace_id == workspace_id)
    )
    return {row.conversation_id: row for row in rows}


def _last_messages_by_key(workspace_id: int, conversation_ids: list[int]) -> dict[int, Row[Any]]:
    """PostgreSQL (messages partitioned by month): each conversation's newest (id, created_at) from
    the index alone (LATERAL … LIMIT 1), then each row read from the one partition its created_at
    names. Reading the rows by id alone would probe every partition's index for every id.

    The ids arrive as one array, not as a join to ``conversations``: the callers took them from
    the workspace's conversations already, and reading those rows again was a fifth of the
    statement's pages; each message read is checked to be the workspace's instead, on the row
    read anyway. One array is also one statement text whatever the page's length (an ``IN``
    list has one per length, each planned over every partition until it is prepared)."""
    rows = db.session.execute(_newest_by_key(), {"ids": conversation_ids, "workspace_id": workspace_id})
    return {row.conversation_id: row for row in rows}


@functools.cache
def _newest_by_key() -> Select[Any]:
    """The statement of ``_last_messages_by_key``, built once: an alias of ``messages`` copies
    every column, which cost about a millisecond of Python on each list page."""
    wanted = func.unnest(bindparam("ids", type_=ARRAY(Integer))).table_valued("id").render_derived("wanted")
    found = aliased(Message)
    newest = (
        select(found.id.label("id"), found.created_at.label("created_at"))
        .where(found.conversation_id == wanted.c.id)
        .order_by(found.created_at.desc(), found.id.desc())
        .limit(written(1))
        .lateral("newest")
    )
    return (
        select(*_PREVIEW_COLUMNS)
        .select_from(wanted)
        .join(newest, true())
        .join(Message, (Message.id == newest.c.id) & (Message.created_at == newest.c.created_at))
        .where(Message.workspace_id == bindparam("workspace_id"))
    )
