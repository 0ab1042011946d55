"""Duplicates: finding leads that are the same person, and merging them into one.

The classic Brazilian duplicate is a mobile number with and without the ninth digit
(+55 11 98765-4321 typed by someone, +55 11 8765-4321 as WhatsApp reports older numbers): those
are the same line, and are found here along with leads sharing an email address.
"""

from __future__ import annotations

from flask_babel import gettext as _
from sqlalchemy import ColumnElement, func, or_, select, update

from crm.errors import ValidationFailed
from crm.extensions import db
from crm.leads.consent import ConsentChange, record_consent
from crm.leads.models import ConsentEvent, ConsentSource, Lead
from crm.leads.phones import phone_variants
from crm.leads.services import get_lead, set_tags
from crm.realtime.broker import publish_after_commit

MAX_NOTES_AFTER_MERGE = 10_000


def possible_duplicates(workspace_id: int, lead: Lead, limit: int = 10) -> list[Lead]:
    """Other leads (not in the trash) with the same email or the same phone line."""
    conditions: list[ColumnElement[bool]] = []
    variants = phone_variants(lead.phone)
    if variants:
        conditions.append(Lead.phone.in_(variants))
    if lead.email:
        conditions.append(func.lower(Lead.email) == lead.email.lower())
    if not conditions:
        return []
    return list(
        db.session.scalars(
            select(Lead)
            .where(Lead.workspace_id == workspace_id, Lead.id != lead.id, Lead.kind == "person")
            .where(Lead.deleted_at.is_(None), or_(*conditions))
            .order_by(Lead.id)
            .limit(limit)
        )
    )


def merge_leads(workspace_id: int, keep_id: int, other_id: int) -> Lead:
    """Merge ``other`` into ``keep``: conversations (two on the same number become one thread),
    consent history, tags, and what ``keep`` lacks (name, email, custom fields); ``other`` is then
    deleted. Consent errs on the safe side: if either opted out, the merged lead is opted out.
    """
    from crm.archiving.models import ArchivedConversation
    from crm.inbox.models import Conversation, ConversationNote, Message

    if keep_id == other_id:
        raise ValidationFailed(_("Choose two different leads to merge."), code="invalid_merge")
    get_lead(workspace_id, keep_id), get_lead(workspace_id, other_id)  # both exist, here, not trashed
    # Both leads and their conversations are locked (leads in id order, so two merges can't
    # deadlock): a keyword opt-out or an inbound message arriving meanwhile waits for the merge
    # instead of landing on a row about to be deleted (and is then retried on the merged lead).
    locked = {
        lead.id: lead
        for lead in db.session.scalars(
            select(Lead)
            .where(Lead.id.in_([keep_id, other_id]))
            .order_by(Lead.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    keep, other = locked[keep_id], locked[other_id]
    conversations = db.session.scalars(
        select(Conversation)
        .where(Conversation.lead_id.in_([keep.id, other.id]))
        .order_by(Conversation.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    kept_conversations = {c.account_id: c for c in conversations if c.lead_id == keep.id}
    for conversation in [c for c in conversations if c.lead_id == other.id]:
        target = kept_conversations.get(conversation.account_id)
        if target is None:
            conversation.lead_id = keep.id
            continue
        for model in (Message, ConversationNote):
            db.session.execute(
                update(model)
                .where(model.conversation_id == conversation.id)
                .values(conversation_id=target.id)
            )
        target.unread_count += conversation.unread_count
        if conversation.last_message_at and (
            target.last_message_at is None or conversation.last_message_at > target.last_message_at
        ):
            target.last_message_at = conversation.last_message_at
        if target.status == "closed" and conversation.status == "open":
            target.status = "open"
        db.session.delete(conversation)
    db.session.execute(update(ConsentEvent).where(ConsentEvent.lead_id == other.id).values(lead_id=keep.id))
    # Their archived history too: restored later, it lands in the merged lead's conversations.
    db.session.execute(
        update(ArchivedConversation).where(ArchivedConversation.lead_id == other.id).values(lead_id=keep.id)
    )
    set_tags(
        keep,
        keep.tag_names
        + [t for t in other.tag_names if t.casefold() not in {k.casefold() for k in keep.tag_names}],
    )
    keep.name = keep.name or other.name
    keep.email = keep.email or other.email
    keep.custom_fields = {**(other.custom_fields or {}), **(keep.custom_fields or {})} or None
    note = _("Merged with %(phone)s %(name)s.", phone=other.phone or other.bsuid or "", name=other.name)
    keep.notes = "\n".join(part for part in (keep.notes, other.notes, note.strip()) if part)[
        :MAX_NOTES_AFTER_MERGE
    ]
    merged = ConsentChange(ConsentSource.MERGE, detail=other.phone or other.bsuid or "")
    if other.opted_out_at is not None and keep.opted_out_at is None:
        record_consent(keep, False, merged)  # the other one said stop: the merged lead stays out
    elif other.opt_in and keep.opted_out_at is None and not keep.opt_in:
        record_consent(keep, True, merged)
    other_bsuid = other.bsuid
    db.session.delete(other)
    db.session.flush()
    if keep.bsuid is None and other_bsuid:
        keep.bsuid = other_bsuid
    for conversation in kept_conversations.values():
        publish_after_commit(
            workspace_id, {"type": "conversation.updated", "conversation_id": conversation.id}
        )
    db.session.commit()
    return keep
