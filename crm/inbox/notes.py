"""Team notes on a conversation: written by agents, never sent to the customer."""

from __future__ import annotations

from flask_babel import gettext as _
from sqlalchemy import select

from crm.auth.models import User
from crm.errors import ValidationFailed
from crm.extensions import db
from crm.inbox.models import ConversationNote
from crm.inbox.services import get_conversation, member_names
from crm.tenancy import scoped


def add_note(workspace_id: int, conversation_id: int, user_id: int, text: object) -> ConversationNote:
    """A note for the team; it is never sent to the customer."""
    from crm.textcheck import check_clean_text

    conversation = get_conversation(workspace_id, conversation_id)
    if not isinstance(text, str) or not text.strip() or len(text) > 4000:
        raise ValidationFailed(_("Write the note (up to 4000 characters)."), code="invalid_note")
    note = ConversationNote(
        workspace_id=workspace_id,
        conversation_id=conversation.id,
        author_user_id=user_id,
        text=check_clean_text(text.strip(), code="invalid_note"),
    )
    db.session.add(note)
    db.session.flush()
    from crm.realtime.broker import publish_after_commit

    publish_after_commit(
        workspace_id, {"type": "note.created", "note_id": note.id, "conversation_id": conversation.id}
    )
    db.session.commit()
    return note


def recent_notes(workspace_id: int, conversation_id: int, limit: int = 20) -> list[ConversationNote]:
    get_conversation(workspace_id, conversation_id)
    notes = db.session.scalars(
        scoped(select(ConversationNote), ConversationNote, workspace_id)
        .where(ConversationNote.conversation_id == conversation_id)
        .order_by(ConversationNote.created_at.desc(), ConversationNote.id.desc())
        .limit(limit)
    )
    return list(reversed(list(notes)))


def note_author_names(workspace_id: int, notes: list[ConversationNote]) -> dict[int, str]:
    """The authors' names: the team's (remembered), and someone who left read by id."""
    ids = {n.author_user_id for n in notes if n.author_user_id}
    names = member_names(workspace_id, ids)
    if ids - names.keys():
        names.update(
            (u.id, u.name or u.email)
            for u in db.session.scalars(select(User).where(User.id.in_(ids - names.keys())))
        )
    return names
