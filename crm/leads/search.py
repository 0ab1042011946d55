"""Finding leads: search, filters, sort orders and counts that stay fast at a million leads.

Search matches a fragment of the name or notes, accents and case aside (one trigram-indexed
expression on PostgreSQL, migrations 0022 and 0024), the start of the email, and the phone: the
whole number as people write it, its start (with or without the country code) or its last digits.
Each of these has its index on PostgreSQL. Every index is written for each lead an import
writes, so parts from the middle of an email or a phone have none: a search reads every lead
for them only when the indexed ways find nobody.
Lists are keyset-paginated; counts stop at ``COUNT_CAP`` ("1,000+") instead of counting every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

import phonenumbers
from sqlalchemy import ColumnElement, Select, and_, exists, func, literal_column, or_, select

from crm.db import LIKE_ESCAPE, fold, folded, like_escaped, right, utcnow
from crm.extensions import db
from crm.leads.models import Lead, LeadTag
from crm.leads.phones import as_written, digits_of, maybe_e164
from crm.leads.services import tag_key, workspace_country
from crm.pagination import Page, invalid_cursor, keyset_page
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


TAIL_DIGITS = 4  # a phone's last digits in ix_leads_workspace_id_phone_tail (migration 0022)


def search_text() -> ColumnElement[str]:
    """Name and notes as one text, folded (``crm.db.fold``); the trigram index's expression."""
    return folded(Lead.name + literal_column("' '") + Lead.notes)


def _phone_tail() -> ColumnElement[str]:
    return right(Lead.phone, literal_column(str(TAIL_DIGITS)))


def _phone_starts(prefix: str) -> ColumnElement[bool]:
    """The phones that start with ``prefix`` (a "+" and digits), as a range of the workspace's
    unique phone index: every E.164 number is a "+" and digits, which sort the same way in
    every collation."""
    rest = prefix.rstrip("9")
    if rest == "+":  # "+99…": every larger number starts with it
        return Lead.phone >= prefix
    return and_(Lead.phone >= prefix, Lead.phone < rest[:-1] + str(int(rest[-1]) + 1))


def _phone_digits(q: str) -> str:
    """The digits of a search that can be (part of) a phone, or "": at least TAIL_DIGITS of
    them and no letter ("Maria 2024" is not a phone)."""
    digits = digits_of(q)
    return digits if len(digits) >= TAIL_DIGITS and not any(ch.isalpha() for ch in q) else ""


def _phone_conditions(q: str, country: str) -> list[ColumnElement[bool]]:
    """A phone as people type it: whole, its start (with or without the country code) or its
    last digits."""
    digits = _phone_digits(q)
    if not digits:
        return []
    conditions: list[ColumnElement[bool]] = [
        and_(_phone_tail() == digits[-TAIL_DIGITS:], Lead.phone.like(f"%{digits}"))
    ]
    e164 = maybe_e164(q, country)
    if e164:
        conditions.append(Lead.phone == e164)
    typed = as_written(q)
    if typed.startswith("+"):  # "+55 11 9…", "0055 11 9…": with the country code
        international = digits_of(typed)
        starts = {"+" + international} if len(international) >= TAIL_DIGITS else set()  # not "0055"
    else:  # "55 11 9…" without its "+", "11 9…" at home, "011 9…" with a trunk prefix
        starts = {"+" + digits}
        national = digits.lstrip("0")
        if len(national) >= TAIL_DIGITS:  # "0015" is no start of a number
            starts.add(f"+{phonenumbers.country_code_for_region(country)}{national}")
    conditions.extend(_phone_starts(prefix) for prefix in sorted(starts))
    return conditions


def _indexed_matches(q: str, country: str) -> list[ColumnElement[bool]]:
    """The ways a search finds leads through indexes (migrations 0022, 0024), fast at a million."""
    return [
        search_text().like(f"%{like_escaped(fold(q))}%", escape=LIKE_ESCAPE),
        func.lower(Lead.email).like(f"{like_escaped(q.lower())}%", escape=LIKE_ESCAPE),
        *_phone_conditions(q, country),
    ]


def _fragment_matches(q: str) -> list[ColumnElement[bool]]:
    """What only reading every lead finds: digits from the middle of a phone ("1198765" of
    "+55 11 98765-4321"), a part of an email from its middle ("padaria" of "ana@padaria.com").
    A search looks this way when the indexed ways find nobody, and only for text that can be
    such a part (an email has no space)."""
    fragments: list[ColumnElement[bool]] = []
    digits = _phone_digits(q)
    if digits:
        fragments.append(Lead.phone.like(f"%{digits}%"))
    if " " not in q:
        fragments.append(func.lower(Lead.email).like(f"%{like_escaped(q.lower())}%", escape=LIKE_ESCAPE))
    return fragments


def _last_message_since(days: int) -> Any:
    from crm.inbox.models import Conversation

    return exists().where(
        Conversation.lead_id == Lead.id, Conversation.last_message_at >= utcnow() - timedelta(days=days)
    )


def filtered_leads(workspace_id: int, filters: LeadFilter) -> Select[tuple[Lead]]:
    """The leads ``filters`` select, the search's way chosen now (an export, a count, a
    broadcast's audience: one statement each; only pages keep an earlier page's way)."""
    return _searched(workspace_id, filters)[0]


def _searched(
    workspace_id: int, filters: LeadFilter, by_fragments: bool | None = None
) -> tuple[Select[tuple[Lead]], bool | None]:
    """The leads ``filters`` select, and whether the search looked for fragments (None: no
    search). ``by_fragments`` keeps the choice an earlier page made; None makes it now."""
    stmt = scoped(select(Lead), Lead, workspace_id).where(Lead.kind == "person")
    stmt = stmt.where(Lead.deleted_at.isnot(None) if filters.trash else Lead.deleted_at.is_(None))
    stmt = _with_filters(stmt, filters)
    q = filters.q.replace("\x00", "").strip()
    if not q:
        return stmt, None
    found = stmt.where(or_(*_indexed_matches(q, workspace_country(workspace_id))))
    fragments = _fragment_matches(q)
    if by_fragments is None:
        by_fragments = bool(fragments) and not db.session.scalar(select(found.exists()))
    if by_fragments and fragments:
        return stmt.where(or_(*fragments)), True
    return found, False


def _with_filters(stmt: Select[tuple[Lead]], filters: LeadFilter) -> Select[tuple[Lead]]:
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


# A search's next pages look the way its first page did: a lead written or deleted between two
# pages could otherwise switch a search from the indexed ways to fragments (or back), and the
# next page would continue another list from the cursor. The way is the cursor's prefix ("." is
# not in the cursor's alphabet); a cursor without one decides again.
_BY_FRAGMENTS, _BY_INDEXES = "f.", "i."


def list_leads(
    workspace_id: int, filters: LeadFilter, sort: Sort, limit: int, cursor: str | None
) -> Page[Lead]:
    by_fragments: bool | None = None
    if cursor and cursor[:2] in (_BY_FRAGMENTS, _BY_INDEXES):
        by_fragments, cursor = cursor[:2] == _BY_FRAGMENTS, cursor[2:]
        if not cursor:
            raise invalid_cursor()
    stmt, by_fragments = _searched(workspace_id, filters, by_fragments)
    if sort in (Sort.NAME, Sort.NAME_DESC):
        page = keyset_page(stmt, [Lead.name, Lead.id], limit, cursor, ascending=sort == Sort.NAME)
    else:
        page = keyset_page(stmt, [Lead.id], limit, cursor, ascending=sort == Sort.OLDEST)
    if page.next_cursor and by_fragments is not None:
        return Page(page.items, (_BY_FRAGMENTS if by_fragments else _BY_INDEXES) + page.next_cursor)
    return page


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
