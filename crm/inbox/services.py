"""One conversation and its messages: the upsert, opening a thread and its pages, assignment,
tags, status, the AI switch, the 24-hour window, deleting a message, and their API JSON (the
list is crm.inbox.listing; team notes are crm.inbox.notes)."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from flask_babel import gettext as _
from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    Select,
    Table,
    bindparam,
    column,
    func,
    select,
    update,
)
from sqlalchemy.orm import aliased, joinedload

from crm.auth.models import Membership
from crm.db import insert_ignoring_conflicts, utcnow, written
from crm.errors import Conflict, NotFound, ValidationFailed
from crm.extensions import db
from crm.inbox.keys import forget_messages
from crm.inbox.models import Conversation, ConversationNote, Message
from crm.inbox.team import team_facts
from crm.leads.models import Lead
from crm.leads.services import iso
from crm.pagination import Page, cursor_values, keyset_page, page_of
from crm.tenancy import get_scoped, scoped

if TYPE_CHECKING:
    from crm.whatsapp.models import WhatsAppAccount


def open_conversation(workspace_id: int, account_id: int, lead_id: int, at: datetime | None = None) -> None:
    """Create the lead's conversation on this number unless it exists (no commit); its
    ``last_message_at`` is the first message's own time."""
    now = utcnow()
    conversations = cast(Table, Conversation.__table__)
    db.session.connection().execute(
        insert_ignoring_conflicts(conversations).values(
            workspace_id=workspace_id,
            account_id=account_id,
            lead_id=lead_id,
            status="open",
            unread_count=0,
            ai_enabled=True,
            last_message_at=at or now,
            created_at=now,
        )
    )


def conversation_for(
    workspace_id: int, account_id: int, lead_id: int, at: datetime | None = None
) -> Conversation:
    """The lead's conversation on this number, created if needed (no commit: the caller owns it).

    One conversation per (number, lead), enforced by a UNIQUE constraint: concurrent first
    messages from the same person end in the same conversation.
    """
    key = (Conversation.account_id == account_id) & (Conversation.lead_id == lead_id)
    conversation = db.session.scalar(select(Conversation).where(key))
    if conversation is None:  # first contact: create it, letting the constraint settle any race
        open_conversation(workspace_id, account_id, lead_id, at)
        conversation = db.session.scalar(select(Conversation).where(key))
    assert conversation is not None and conversation.workspace_id == workspace_id
    return conversation


def latest_conversation_of_lead(workspace_id: int, lead_id: int) -> Conversation | None:
    return db.session.scalar(
        scoped(select(Conversation), Conversation, workspace_id)
        .where(Conversation.lead_id == lead_id)
        .order_by(Conversation.last_message_at.desc(), Conversation.id.desc())
        .limit(written(1))
    )


def get_conversation(workspace_id: int, conversation_id: int) -> Conversation:
    return get_scoped(Conversation, workspace_id, conversation_id)


THREAD_KEYS = (Message.created_at, Message.id)


def list_messages(workspace_id: int, conversation_id: int, limit: int, cursor: str | None) -> Page[Message]:
    get_conversation(workspace_id, conversation_id)
    if cursor and db.session.get_bind().dialect.name == "postgresql":
        page = _messages_before(workspace_id, conversation_id, limit, cursor)
    else:
        stmt = scoped(select(Message), Message, workspace_id).where(
            Message.conversation_id == conversation_id
        )
        page = keyset_page(stmt, THREAD_KEYS, limit, cursor)
    load_media(page.items)
    return page


def _messages_before(workspace_id: int, conversation_id: int, limit: int, cursor: str) -> Page[Message]:
    """PostgreSQL: a thread's older page through ``messages_before`` (migration 0025), whose plan
    is made once per connection, not on every scroll; the same rows as ``keyset_page``'s (its
    conditions are written again there, in SQL)."""
    created_at, message_id = cursor_values(cursor, THREAD_KEYS)
    values = {
        "workspace_id": workspace_id,
        "conversation_id": conversation_id,
        "created_at": created_at,
        "id": message_id,
        "limit": limit + 1,
    }
    return page_of(list(db.session.scalars(_before_statement(), values)), THREAD_KEYS, limit)


@functools.cache
def _before_statement() -> Select[tuple[Message]]:
    """``messages_before``'s rows as messages, built once."""
    found = func.messages_before(
        bindparam("workspace_id", type_=Integer),
        bindparam("conversation_id", type_=Integer),
        bindparam("created_at", type_=DateTime(timezone=True)),
        bindparam("id", type_=BigInteger),  # any id a cursor may hold (below 2**63)
        bindparam("limit", type_=Integer),
    ).table_valued(*(column(c.name, c.type) for c in Message.__table__.columns))  # typed: UTC times
    older = aliased(Message, found, adapt_on_names=True)
    return select(older).order_by(older.created_at.desc(), older.id.desc())


def set_ai_enabled(workspace_id: int, conversation_id: int, enabled: bool) -> Conversation:
    """The conversation's bot switch; every open inbox shows the new state."""
    conversation = get_conversation(workspace_id, conversation_id)
    conversation.ai_enabled = enabled
    _announce(conversation)
    db.session.commit()
    return conversation


def conversation_json(conversation: Conversation) -> dict[str, Any]:
    lead = conversation.lead
    return {
        "id": conversation.id,
        "lead": {"id": lead.id, "phone": lead.phone, "name": lead.name},
        "account_id": conversation.account_id,
        "status": conversation.status,
        "unread_count": conversation.unread_count,
        "last_message_at": iso(conversation.last_message_at),
        "ai_enabled": conversation.ai_enabled,
    }


def message_json(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "direction": message.direction,
        "type": message.type,
        "text": message.text,
        "status": message.status,
        "provider": message.provider,
        "provider_message_id": message.provider_message_id,
        "account_id": message.account_id,
        "author": message.author,
        "error_code": message.error_code,
        "error_title": message.error_title,
        "created_at": iso(message.created_at),
        "media": media_json(message),
    }


def media_json(message: Message) -> dict[str, Any] | None:
    media = message.media_file if message.media_file_id is not None else None
    if media is None:
        return None
    return {
        "id": media.id,
        "kind": media.kind,
        "status": media.status,
        "mime_type": media.mime_type,
        "filename": media.filename,
        "size": media.size,
        "voice": media.voice,
        "error": media.error_title if media.status == "failed" else None,
        "url": f"/api/v1/media/{media.id}" if media.is_ready else None,
    }


class OpenedThread(NamedTuple):
    conversation: Conversation
    account: WhatsAppAccount | None
    has_notes: bool


def open_thread(workspace_id: int, conversation_id: int) -> OpenedThread:
    """The conversation an agent opens, with its customer, their tags, its number and whether the
    team wrote notes on it, in one statement (they stay in the session for the page and for
    ``get_conversation``). An unread conversation shows as read at once; ``mark_read`` stores
    that once the page is written."""
    from crm.whatsapp.models import WhatsAppAccount

    has_notes = (
        select(ConversationNote.id).where(ConversationNote.conversation_id == Conversation.id).exists()
    )
    found = (
        db.session.execute(
            scoped(select(Conversation, WhatsAppAccount, has_notes), Conversation, workspace_id)
            .outerjoin(WhatsAppAccount, WhatsAppAccount.id == Conversation.account_id)
            .where(Conversation.id == conversation_id)
            .options(joinedload(Conversation.lead).joinedload(Lead.tags))
        )
        .unique()
        .first()
    )
    if found is None:
        raise NotFound(f"Conversation {conversation_id}")
    return OpenedThread(*found)


def mark_read(conversation: Conversation) -> None:
    """The agent has seen the conversation: its unread count goes to 0 and every open list drops
    its badge. Called after the page is rendered, so the commit expires nothing the page needs."""
    from crm.db import commit_without_waiting_for_disk

    if conversation.unread_count:
        conversation.unread_count = 0
        _announce(conversation)
        commit_without_waiting_for_disk()  # a lost reset only shows the count again


def thread_page(
    workspace_id: int, conversation_id: int, cursor: str | None, limit: int = 50
) -> Page[Message]:
    """Messages newest first (the template shows them oldest at the top), with their files."""
    return list_messages(workspace_id, conversation_id, limit, cursor)


def load_media(messages: list[Message]) -> None:
    """Read the files of these messages in one statement (the bubbles use ``message.media_file``,
    which then finds them in the session without a query each)."""
    from crm.media.models import MediaFile

    ids = {m.media_file_id for m in messages if m.media_file_id is not None}
    if ids:
        db.session.scalars(select(MediaFile).where(MediaFile.id.in_(ids))).all()


class AlreadyAssigned(Conflict):
    code = "already_assigned"

    def default_message(self) -> str:
        return _("Someone else took this conversation a moment ago.")


def _announce(conversation: Conversation) -> None:
    from crm.realtime.broker import publish_after_commit

    publish_after_commit(
        conversation.workspace_id, {"type": "conversation.updated", "conversation_id": conversation.id}
    )


def tag_lead(workspace_id: int, conversation_id: int, name: object) -> Conversation:
    """Add a tag to the conversation's customer (tags live on the lead, shared by every number)."""
    from crm.leads.services import MAX_TAGS_PER_LEAD, clean_tags, set_tags

    conversation = get_conversation(workspace_id, conversation_id)
    wanted = clean_tags([name])
    if not wanted:
        raise ValidationFailed(_("Type the tag."), code="invalid_tags")
    if len(conversation.lead.tags) >= MAX_TAGS_PER_LEAD:
        raise ValidationFailed(
            _("A lead can have at most %(n)d tags.", n=MAX_TAGS_PER_LEAD), code="invalid_tags"
        )
    set_tags(conversation.lead, [*conversation.lead.tag_names, *wanted])
    _announce(conversation)
    db.session.commit()
    return conversation


def untag_lead(workspace_id: int, conversation_id: int, name: object) -> Conversation:
    from crm.leads.services import set_tags

    conversation = get_conversation(workspace_id, conversation_id)
    key = " ".join(name.split()).casefold() if isinstance(name, str) else ""
    set_tags(conversation.lead, [t.name for t in conversation.lead.tags if t.key != key])
    _announce(conversation)
    db.session.commit()
    return conversation


def workspace_tags(workspace_id: int, limit: int = 100) -> list[str]:
    """The workspace's most used tag names, for the filter's suggestions."""
    from crm.leads.models import LeadTag

    rows = db.session.execute(
        select(func.min(LeadTag.name), func.count())
        .where(LeadTag.workspace_id == workspace_id)
        .group_by(LeadTag.key)
        .order_by(func.count().desc(), func.min(LeadTag.name))
        .limit(limit)
    ).all()
    return [row[0] for row in rows]


def take(workspace_id: int, conversation_id: int, user_id: int) -> Conversation:
    """Assign an unassigned conversation to ``user_id``: of two agents taking it at once, one wins
    and the other is told (a conditional UPDATE, not a check-then-set)."""
    conversation = get_conversation(workspace_id, conversation_id)
    if conversation.assignee_id == user_id:
        return conversation
    taken = db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.assignee_id.is_(None))
        .values(assignee_id=user_id)
    ).rowcount  # type: ignore[attr-defined]
    if not taken:
        db.session.rollback()
        raise AlreadyAssigned()
    _announce(conversation)
    db.session.commit()
    db.session.refresh(conversation)
    return conversation


def assign(workspace_id: int, conversation_id: int, assignee_id: int | None) -> Conversation:
    """Give the conversation to a member of the workspace (or to nobody)."""
    conversation = get_conversation(workspace_id, conversation_id)
    if assignee_id is not None:
        member = db.session.scalar(
            select(Membership).where(
                Membership.workspace_id == workspace_id,
                Membership.user_id == assignee_id,
                Membership.disabled_at.is_(None),
            )
        )
        if member is None:
            raise ValidationFailed(
                _("That person is not an active member of this workspace."), code="not_member"
            )
    conversation.assignee_id = assignee_id
    _announce(conversation)
    db.session.commit()
    return conversation


def set_status(workspace_id: int, conversation_id: int, status: str) -> Conversation:
    if status not in ("open", "closed"):
        raise ValidationFailed(_("A conversation is open or closed."), code="invalid_status")
    conversation = get_conversation(workspace_id, conversation_id)
    conversation.status = status
    if status == "closed":
        conversation.unread_count = 0
    _announce(conversation)
    db.session.commit()
    return conversation


def assignable_members(workspace_id: int) -> tuple[tuple[int, str], ...]:
    """(user id, name) of the workspace's active members, by name; remembered a few seconds."""
    return team_facts(workspace_id).members


def member_names(workspace_id: int, user_ids: set[int]) -> dict[int, str]:
    """Display names of these users, only those who are active members of the workspace."""
    if not user_ids:
        return {}
    return {user_id: name for user_id, name in assignable_members(workspace_id) if user_id in user_ids}


CUSTOMER_CARE_WINDOW = timedelta(hours=24)


def window_closed(conversation: Conversation, account: WhatsAppAccount | None = None) -> bool:
    """Cloud API numbers may send free text only within 24 h of the customer's last message;
    after that only approved templates go through (Meta answers 131047 otherwise)."""
    from crm.whatsapp.models import WhatsAppAccount

    account = account or db.session.get(WhatsAppAccount, conversation.account_id)
    if account is None or account.provider != "cloud":
        return False
    last_inbound = db.session.scalar(
        select(Message.created_at)
        .where(Message.conversation_id == conversation.id, Message.direction == "in")
        .order_by(Message.created_at.desc())
        .limit(written(1))
    )
    return last_inbound is None or utcnow() - last_inbound > CUSTOMER_CARE_WINDOW


def window_closed_to_lead(workspace_id: int, lead_id: int, account: WhatsAppAccount) -> bool:
    """``window_closed`` for a first message: with no conversation on this number yet, the lead
    never wrote on it, so a Cloud API number can only send them a template."""
    conversation = db.session.scalar(
        scoped(select(Conversation), Conversation, workspace_id).where(
            Conversation.account_id == account.id, Conversation.lead_id == lead_id
        )
    )
    if conversation is None:
        return account.provider == "cloud"
    return window_closed(conversation, account)


class MessageBeingSent(Conflict):
    code = "message_being_sent"

    def default_message(self) -> str:
        return _("This message is being sent right now; try again in a moment.")


def delete_message(workspace_id: int, message_id: int) -> None:
    """Remove a message from Zapdesk (not from the customer's phone), with its file. A queued
    message is cancelled with it; one in the middle of being sent can't be deleted."""
    from crm.media.cleanup import delete_unreferenced
    from crm.realtime.broker import publish_after_commit
    from crm.whatsapp.models import Outbox, OutboxState

    message = get_scoped(Message, workspace_id, message_id)
    outbox = db.session.scalar(select(Outbox).where(Outbox.message_id == message.id))
    if outbox is not None:
        # Cancelled only if no sender has it: a send under way can't be taken back.
        cancelled = db.session.execute(
            update(Outbox)
            .where(Outbox.id == outbox.id, Outbox.state != OutboxState.SENDING.value)
            .values(state=OutboxState.CANCELLED.value)
        ).rowcount  # type: ignore[attr-defined]
        if not cancelled:
            db.session.rollback()
            raise MessageBeingSent()
    media_id, conversation_id = message.media_file_id, message.conversation_id
    forget_messages([message.id])  # its outbox row
    db.session.delete(message)
    publish_after_commit(
        workspace_id,
        {"type": "message.deleted", "message_id": message_id, "conversation_id": conversation_id},
    )
    db.session.commit()
    if media_id is not None:
        delete_unreferenced([media_id])
