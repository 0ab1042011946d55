"""What the broadcasts pages read: the list with each broadcast's progress, the per-recipient table
(keyset pages, filtered by outcome) and the CSV export of the results.

A recipient's outcome is ``services.recipient_outcome()``, the one definition the counters use too,
so the table, the counters and the export never disagree about a recipient.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from crm.auth.models import Workspace
from crm.broadcasts.models import Broadcast, BroadcastRecipient
from crm.broadcasts.services import COUNTED, recipient_outcome
from crm.extensions import db
from crm.inbox.models import Message
from crm.leads.export import neutralised
from crm.leads.models import Lead
from crm.pagination import Page, keyset_page
from crm.tenancy import scoped
from crm.whatsapp.models import WhatsAppAccount

OUTCOMES = COUNTED  # queued, sent, delivered, read, failed, skipped: the table's status filter
REACHED = ("sent", "delivered", "read")  # the provider took the message


# --- the list -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedBroadcast:
    broadcast: Broadcast
    sent: int  # recipients whose message reached the provider (sent, delivered or read)
    done: int  # recipients no longer waiting (sent, failed or skipped)

    @property
    def total(self) -> int:
        return self.broadcast.recipients_count


def list_page(workspace_id: int, limit: int, cursor: str | None) -> Page[ListedBroadcast]:
    """A keyset page of the workspace's broadcasts, newest first, with their progress read in one
    grouped query for the whole page."""
    page: Page[Broadcast] = keyset_page(
        scoped(select(Broadcast), Broadcast, workspace_id), [Broadcast.id], limit, cursor
    )
    return Page(_with_progress_all(page.items), page.next_cursor)


def with_progress(broadcast: Broadcast) -> ListedBroadcast:
    return _with_progress_all([broadcast])[0]


def _with_progress_all(broadcasts: list[Broadcast]) -> list[ListedBroadcast]:
    if not broadcasts:
        return []
    outcome = recipient_outcome()
    rows = db.session.execute(
        select(BroadcastRecipient.broadcast_id, outcome, func.count())
        .select_from(BroadcastRecipient)
        .outerjoin(Message, Message.id == BroadcastRecipient.message_id)
        .where(BroadcastRecipient.broadcast_id.in_([b.id for b in broadcasts]))
        .group_by(BroadcastRecipient.broadcast_id, outcome)
    ).all()
    sent: dict[int, int] = {}
    waiting: dict[int, int] = {}
    for broadcast_id, state, n in rows:
        if state in REACHED:
            sent[broadcast_id] = sent.get(broadcast_id, 0) + n
        elif state == "queued":
            waiting[broadcast_id] = waiting.get(broadcast_id, 0) + n
    return [
        ListedBroadcast(b, sent.get(b.id, 0), max(0, b.recipients_count - waiting.get(b.id, 0)))
        for b in broadcasts
    ]


# --- the per-recipient table ------------------------------------------------------------------


@dataclass(frozen=True)
class RecipientRow:
    id: int
    lead_id: int
    lead_name: str
    phone: str | None
    is_group: bool
    number: str
    outcome: str
    skip_reason: str | None
    error_code: str | None
    error_title: str | None
    variant: int | None
    at: datetime | None  # when its message was queued, else when the recipient last changed


def _rows(ids: list[int]) -> list[RecipientRow]:
    """The table's columns for these recipients, in id order, in one query."""
    if not ids:
        return []
    outcome = recipient_outcome()
    found = db.session.execute(
        select(
            BroadcastRecipient.id,
            BroadcastRecipient.lead_id,
            Lead.name,
            Lead.phone,
            Lead.bsuid,
            Lead.kind,
            WhatsAppAccount.name.label("number"),
            outcome.label("outcome"),
            BroadcastRecipient.skip_reason,
            Message.error_code,
            Message.error_title,
            BroadcastRecipient.variant,
            func.coalesce(Message.created_at, BroadcastRecipient.updated_at).label("at"),
        )
        .select_from(BroadcastRecipient)
        .join(Lead, Lead.id == BroadcastRecipient.lead_id)
        .join(WhatsAppAccount, WhatsAppAccount.id == BroadcastRecipient.account_id)
        .outerjoin(Message, Message.id == BroadcastRecipient.message_id)
        .where(BroadcastRecipient.id.in_(ids))
        .order_by(BroadcastRecipient.id)
    ).all()
    return [
        RecipientRow(
            id=row.id,
            lead_id=row.lead_id,
            lead_name=row.name or "",
            phone=row.phone,
            is_group=row.kind == "group",
            number=row.number,
            outcome=row.outcome if row.outcome in OUTCOMES else "failed",
            skip_reason=row.skip_reason,
            error_code=row.error_code,
            error_title=row.error_title,
            variant=row.variant,
            at=row.at,
        )
        for row in found
    ]


def recipient_page(broadcast_id: int, outcome: str, limit: int, cursor: str | None) -> Page[RecipientRow]:
    """A keyset page of a broadcast's recipients in the order they are sent (by id), only those
    whose outcome is ``outcome`` when one is given. The caller has checked the broadcast's
    workspace."""
    stmt = (
        select(BroadcastRecipient)
        .outerjoin(Message, Message.id == BroadcastRecipient.message_id)
        .where(BroadcastRecipient.broadcast_id == broadcast_id)
    )
    if outcome in OUTCOMES:
        stmt = stmt.where(recipient_outcome() == outcome)
    page: Page[BroadcastRecipient] = keyset_page(stmt, [BroadcastRecipient.id], limit, cursor, ascending=True)
    return Page(_rows([r.id for r in page.items]), page.next_cursor)


# --- the CSV export ---------------------------------------------------------------------------

HEADER = ("name", "phone", "number", "status", "error_code", "error", "variant", "time")
BATCH = 5000


def export_rows(workspace_id: int, broadcast_id: int) -> Iterator[tuple[str, ...]]:
    """The header, then one row per recipient in id order, read in keyset batches, each in a short
    transaction of its own (none stays open while a slow client downloads). Times are in the
    workspace's time zone, with their offset."""
    zone = ZoneInfo(
        db.session.scalar(select(Workspace.timezone).where(Workspace.id == workspace_id)) or "UTC"
    )
    yield HEADER
    last_id = 0
    while True:
        ids = list(
            db.session.scalars(
                select(BroadcastRecipient.id)
                .where(BroadcastRecipient.broadcast_id == broadcast_id, BroadcastRecipient.id > last_id)
                .order_by(BroadcastRecipient.id)
                .limit(BATCH)
            )
        )
        rows = _rows(ids)
        db.session.rollback()
        for row in rows:
            yield (
                neutralised(row.lead_name),
                "" if row.is_group else (row.phone or ""),  # validated E.164: its "+" stays
                neutralised(row.number),
                row.outcome,
                neutralised(row.error_code or (row.skip_reason if row.outcome == "skipped" else None) or ""),
                neutralised(row.error_title or ""),
                "" if row.variant is None else str(row.variant + 1),
                row.at.astimezone(zone).isoformat(timespec="seconds") if row.at else "",
            )
        if len(ids) < BATCH:
            return
        last_id = ids[-1]


def export_csv(workspace_id: int, broadcast_id: int) -> Iterator[bytes]:
    """The results as CSV chunks, BOM first."""
    from crm.leads.export import csv_chunks

    return csv_chunks(export_rows(workspace_id, broadcast_id))


def csv_name(broadcast: Broadcast) -> str:
    """A download name from the broadcast's name, ASCII only (it goes in a header)."""
    import unicodedata

    plain = unicodedata.normalize("NFKD", broadcast.name).encode("ascii", "ignore").decode()
    slug = "-".join("".join(ch if ch.isalnum() else " " for ch in plain.lower()).split())[:60]
    return f"broadcast-{broadcast.id}{'-' + slug if slug else ''}.csv"
