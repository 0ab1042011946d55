"""What the leads pages show, read in a few queries.

The list's rows come with their tags in one query. The lead page gathers the profile, the
consent history with the names of the members who made each change, the conversations per
number, possible duplicates and the numbers a first message can go out on. The trash page
lists deleted leads with the day each will be purged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm.attributes import set_committed_value

from crm.auth.models import Membership, User, Workspace
from crm.extensions import db
from crm.leads.consent import consent_history
from crm.leads.merge import possible_duplicates
from crm.leads.models import ConsentEvent, Lead, LeadTag
from crm.leads.search import LeadFilter, Sort, list_leads
from crm.leads.services import get_lead
from crm.pagination import Page


def with_tags(leads: list[Lead]) -> list[Lead]:
    """Load the tags of a page of leads in one query (instead of one per row)."""
    pending = [lead for lead in leads if "tags" not in lead.__dict__]
    if not pending:
        return leads
    by_lead: dict[int, list[LeadTag]] = {lead.id: [] for lead in pending}
    for tag in db.session.scalars(
        select(LeadTag).where(LeadTag.lead_id.in_(list(by_lead))).order_by(LeadTag.name)
    ):
        by_lead[tag.lead_id].append(tag)
    for lead in pending:
        set_committed_value(lead, "tags", by_lead[lead.id])
    return leads


@dataclass(frozen=True)
class ConsentEntry:
    event: ConsentEvent
    who: str  # the member who made the change; "" when nobody of the team did (keyword, import)


@dataclass(frozen=True)
class LeadConversation:
    id: int
    status: str
    last_message_at: datetime | None
    unread_count: int
    number_name: str
    number_phone: str | None


@dataclass(frozen=True)
class NumberChoice:
    id: int
    name: str
    phone: str | None


@dataclass(frozen=True)
class ArchivedHistory:
    """What of the lead's conversations is only in archive files (crm.archiving)."""

    conversations: int
    messages: int
    first_message_at: datetime | None
    last_message_at: datetime | None


@dataclass(frozen=True)
class LeadProfile:
    lead: Lead
    consent: list[ConsentEntry]
    conversations: list[LeadConversation]
    duplicates: list[Lead]
    numbers: list[NumberChoice]
    archived: ArchivedHistory | None = None


def member_names(workspace_id: int, user_ids: set[int]) -> dict[int, str]:
    """Names of these users as the workspace knows them, disabled members included: a consent
    change keeps the name of whoever made it after they leave the team."""
    if not user_ids:
        return {}
    rows = db.session.execute(
        select(User.id, User.name, User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.workspace_id == workspace_id, User.id.in_(user_ids))
    ).all()
    return {row.id: row.name or row.email for row in rows}


def lead_conversations(workspace_id: int, lead_id: int) -> list[LeadConversation]:
    """The lead's conversations, one per number, the most recent first."""
    from crm.inbox.models import Conversation
    from crm.whatsapp.models import WhatsAppAccount

    rows = db.session.execute(
        select(Conversation, WhatsAppAccount.name, WhatsAppAccount.phone)
        .join(WhatsAppAccount, WhatsAppAccount.id == Conversation.account_id)
        .where(Conversation.workspace_id == workspace_id, Conversation.lead_id == lead_id)
        .order_by(Conversation.last_message_at.desc(), Conversation.id.desc())
    ).all()
    return [
        LeadConversation(c.id, c.status, c.last_message_at, c.unread_count, name, phone)
        for c, name, phone in rows
    ]


def sending_numbers(workspace_id: int) -> list[NumberChoice]:
    """The workspace's active numbers, for choosing which one sends a first message."""
    from crm.whatsapp.models import WhatsAppAccount

    rows = db.session.execute(
        select(WhatsAppAccount.id, WhatsAppAccount.name, WhatsAppAccount.phone)
        .where(WhatsAppAccount.workspace_id == workspace_id, WhatsAppAccount.status == "active")
        .order_by(WhatsAppAccount.priority, WhatsAppAccount.id)
    ).all()
    return [NumberChoice(row.id, row.name, row.phone) for row in rows]


def archived_history(workspace_id: int, lead_id: int) -> ArchivedHistory | None:
    """How many of the lead's messages are archived, from when to when; None when none is."""
    from crm.archiving.models import ArchivedConversation, ConversationState

    archived = ArchivedConversation
    conversations, messages, first, last = db.session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(archived.messages), 0),
            func.min(archived.first_message_at),
            func.max(archived.last_message_at),
        ).where(
            archived.workspace_id == workspace_id,
            archived.lead_id == lead_id,
            archived.state == ConversationState.ARCHIVED.value,
        )
    ).one()
    if not conversations:
        return None
    return ArchivedHistory(conversations, int(messages), first, last)


def consent_entries(workspace_id: int, lead_id: int) -> list[ConsentEntry]:
    """The lead's consent history, newest first, with who made each change."""
    events = consent_history(workspace_id, lead_id)
    names = member_names(workspace_id, {e.user_id for e in events if e.user_id is not None})
    return [ConsentEntry(e, names.get(e.user_id, "") if e.user_id else "") for e in events]


def lead_profile(workspace_id: int, lead_id: int) -> LeadProfile:
    """Everything the lead's page shows; NotFound for a lead of another workspace, in the trash or
    missing."""
    lead = get_lead(workspace_id, lead_id)
    return LeadProfile(
        lead=lead,
        consent=consent_entries(workspace_id, lead_id),
        conversations=lead_conversations(workspace_id, lead_id),
        duplicates=possible_duplicates(workspace_id, lead),
        numbers=sending_numbers(workspace_id),
        archived=archived_history(workspace_id, lead_id),
    )


@dataclass(frozen=True)
class TrashedLead:
    lead: Lead
    deleted_at: datetime
    purge_at: datetime  # when the periodic cleanup deletes them for good


def trashed_leads(
    workspace_id: int, q: str, limit: int, cursor: str | None
) -> tuple[list[TrashedLead], str | None]:
    """A keyset page of the trash, the most recently created first, with each lead's purge day."""
    workspace = db.session.get(Workspace, workspace_id)
    keep = timedelta(days=workspace.trash_days if workspace else 30)
    page: Page[Lead] = list_leads(workspace_id, LeadFilter(q=q, trash=True), Sort.NEWEST, limit, cursor)
    entries = [
        TrashedLead(lead, lead.deleted_at, lead.deleted_at + keep)
        for lead in with_tags(page.items)
        if lead.deleted_at is not None
    ]
    return entries, page.next_cursor
