"""Keyset pagination, newest first by default: ``WHERE (a, b) < (cursor)`` instead of OFFSET.

A cursor is the sort key of the last item of a page, encoded opaquely. It stays fast at any
depth and never skips or repeats rows when new ones arrive at the top.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from flask_babel import gettext as _
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from crm.db import written
from crm.errors import DomainError
from crm.extensions import db

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def _encode(values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def _storable(text: str) -> bool:
    """Text a database can compare: bounded, no NUL, valid Unicode (no lone surrogate)."""
    if len(text) > 1000 or "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decode(cursor: str, kinds: Sequence[type]) -> list[Any]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != len(kinds):
            raise ValueError("shape")
        values: list[Any] = []
        for value, kind in zip(raw, kinds, strict=True):
            if kind is datetime:
                moment = datetime.fromisoformat(value)
                if moment.tzinfo is None:
                    raise ValueError("naive")
                values.append(moment)
            elif (
                kind is int and isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
            ) or (kind is str and isinstance(value, str) and _storable(value)):
                values.append(value)
            else:
                raise ValueError("type")
        return values
    except (ValueError, TypeError, OverflowError, binascii.Error, json.JSONDecodeError):
        raise invalid_cursor() from None


def invalid_cursor() -> DomainError:
    return DomainError(_("The cursor is not valid; start again without it."), code="invalid_cursor")


def _kind(key: InstrumentedAttribute[Any]) -> type:
    python_type = key.type.python_type
    return python_type if python_type in (datetime, str) else int


def keyset_page(
    stmt: Select[Any],
    keys: Sequence[InstrumentedAttribute[Any]],
    limit: int,
    cursor: str | None,
    *,
    ascending: bool = False,
) -> Page[Any]:
    """One page of ``stmt`` ordered by ``keys``, descending unless ``ascending`` (the last key must
    be unique, e.g. id; the keys must not be NULL)."""
    if cursor:
        values = cursor_values(cursor, keys)
        # (k1, k2) < (v1, v2) spelled out, so SQLite and PostgreSQL plan it the same way (a
        # thread's older pages on PostgreSQL: the same in SQL, migration 0025).
        clauses = []
        for i, key in enumerate(keys):
            equal_before = [keys[j] == values[j] for j in range(i)]
            clauses.append(and_(*equal_before, key > values[i] if ascending else key < values[i]))
        # The first key's bound alone as well: it is what a range index scan starts from and what
        # lets PostgreSQL skip partitions (messages are partitioned on created_at).
        first = keys[0] >= values[0] if ascending else keys[0] <= values[0]
        stmt = stmt.where(first, or_(*clauses))
    stmt = stmt.order_by(*[k.asc() if ascending else k.desc() for k in keys]).limit(written(limit + 1))
    return page_of(list(db.session.scalars(stmt)), keys, limit)


def cursor_values(cursor: str, keys: Sequence[InstrumentedAttribute[Any]]) -> list[Any]:
    """The sort key a cursor holds (DomainError ``invalid_cursor`` for one that isn't valid)."""
    return _decode(cursor, [_kind(k) for k in keys])


def page_of(rows: list[T], keys: Sequence[InstrumentedAttribute[Any]], limit: int) -> Page[T]:
    """A page of up to ``limit`` of ``rows``, read with one more to know whether more follow."""
    items = rows[:limit]
    more = len(rows) > limit
    return Page(items, cursor_after(items[-1], keys) if more and items else None)


def cursor_after(item: Any, keys: Sequence[InstrumentedAttribute[Any]]) -> str:
    """The cursor of the page that follows ``item``."""
    return _encode([getattr(item, k.key) for k in keys])
