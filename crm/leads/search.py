"""Finding leads: search, filters, sort orders and counts that stay fast at a million leads.

Search matches a fragment of the name, email or notes (one trigram-indexed expression on
PostgreSQL, see migration 0010) or the phone, typed in E.164 or as people write it. Lists are
keyset-paginated; counts stop at ``COUNT_CAP`` ("1,000+") instead of counting every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, literal_column, or_, select

from crm.db import LIKE_ESCAPE, like_escaped, utcnow
from crm.extensions import db
from crm.leads.models import Lead, LeadTag
from crm.leads.phones import maybe_e164
from crm.leads.services import tag_key, workspace_country
from crm.pagination import Page, keyset_page
from crm.tenancy import scoped

COUNT_CAP = 1000


class Consent(StrEnum):
    ANY = ""
    OPTED_IN = "in"
    OPTED_OUT = "out"
    NONE = "none"  # never opted in, never opted out


class Sort(StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"
    NAME = "name"
    NAME_DESC = "-name"


@dataclass(frozen=True)
class LeadFilter:
    q: str = ""
    tag: str = ""
    opt_in: bool | None = None  # the API's filter: opted in or not
    consent: Consent = Consent.ANY
    source: str = ""
    contacted_within_days: int | None = None  # a message in or out within N days
    not_contacted_days: int | None = None  # no message for N days (or never)
    trash: bool = False


def search_text() -> ColumnElement[str]:
    """Name, email and notes as one lower-cased text; the same expression as the trigram index."""
    space: ColumnElement[str] = literal_column("' '")
    return func.lower(
        Lead.name + space + func.coalesce(Lead.email, literal_column("''")) + space + Lead.notes
    )


def _last_message_since(days: int) -> Any:
    from crm.inbox.models import Conversation

    return exists().where(
        Conversation.lead_id == Lead.id, Conversation.last_message_at >= utcnow() - timedelta(days=days)
    )


def filtered_leads(workspace_id: int, filters: LeadFilter) -> Select[tuple[Lead]]:
    stmt = scoped(select(Lead), Lead, workspace_id).where(Lead.kind == "person")
    stmt = stmt.where(Lead.deleted_at.isnot(None) if filters.trash else Lead.deleted_at.is_(None))
    q = filters.q.strip().replace("\x00", "")
    if q:
        like = f"%{like_escaped(q.lower())}%"
        conditions: list[ColumnElement[bool]] = [search_text().like(like, escape=LIKE_ESCAPE)]
        e164 = maybe_e164(q, workspace_country(workspace_id))
        if e164:
            conditions.append(Lead.phone == e164)
        digits = "".join(ch for ch in q if ch.isdigit())
        if len(digits) >= 4:
            conditions.append(Lead.phone.like(f"%{digits}%"))
        stmt = stmt.where(or_(*conditions))
    if filters.tag.strip():
        stmt = stmt.where(
            exists().where(and_(LeadTag.lead_id == Lead.id, LeadTag.key == tag_key(filters.tag)))
        )
    if filters.opt_in is not None:
        stmt = stmt.where(Lead.opt_in.is_(filters.opt_in))
    if filters.consent == Consent.OPTED_IN:
        stmt = stmt.where(Lead.opt_in.is_(True))
    elif filters.consent == Consent.OPTED_OUT:
        stmt = stmt.where(Lead.opted_out_at.isnot(None))
    elif filters.consent == Consent.NONE:
        stmt = stmt.where(Lead.opt_in.is_(False), Lead.opted_out_at.is_(None))
    if filters.source:
        stmt = stmt.where(Lead.source == filters.source)
    if filters.contacted_within_days is not None:
        stmt = stmt.where(_last_message_since(filters.contacted_within_days))
    if filters.not_contacted_days is not None:
        stmt = stmt.where(~_last_message_since(filters.not_contacted_days))
    return stmt


def list_leads(
    workspace_id: int, filters: LeadFilter, sort: Sort, limit: int, cursor: str | None
) -> Page[Lead]:
    stmt = filtered_leads(workspace_id, filters)
    if sort in (Sort.NAME, Sort.NAME_DESC):
        return keyset_page(stmt, [Lead.name, Lead.id], limit, cursor, ascending=sort == Sort.NAME)
    return keyset_page(stmt, [Lead.id], limit, cursor, ascending=sort == Sort.OLDEST)


def capped_count(workspace_id: int, filters: LeadFilter, cap: int = COUNT_CAP) -> int:
    """How many leads match, counting at most ``cap + 1`` rows: "1,000+" is all a list needs."""
    limited = filtered_leads(workspace_id, filters).with_only_columns(Lead.id).limit(cap + 1).subquery()
    return db.session.scalar(select(func.count()).select_from(limited)) or 0


def workspace_tags(workspace_id: int, limit: int = 200) -> list[str]:
    """The tags in use, for filter menus: one spelling per tag."""
    rows = db.session.execute(
        select(LeadTag.key, func.min(LeadTag.name))
        .where(LeadTag.workspace_id == workspace_id)
        .group_by(LeadTag.key)
        .order_by(LeadTag.key)
        .limit(limit)
    ).all()
    return [name for _key, name in rows]
