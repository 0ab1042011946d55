"""Deleting what an archive holds, once its file is verified: crash-safe and resumable.

The verified file, not a query, says what goes: its lines are read again and exactly the rows in
them are deleted (a message that arrived after the export is never taken with the others).

Per conversation:
- first, inside a transaction that locks the conversation's row, a check that it is as exported
  (same lead, number and last message time, the same number of messages and notes, nothing
  waiting to be sent). If not, someone wrote meanwhile: it is marked ``skipped`` and left alone.
  Otherwise it is marked ``deleting``;
- its messages go in chunks, each with what must go with a message (``forget_messages``: provider
  ids in ``message_keys``, outbox rows, broadcast recipients' links);
- last, its notes and its row (only if nothing new landed in it meanwhile), and it is marked
  ``archived``.

Transactions hold up to BATCH rows and are committed one after the other, so a process that dies
leaves whole transactions: every row is either still in the database or already deleted, and the
conversation's state says where it was. A re-run reads the file again: conversations ``deleting``
carry on where they stopped (deleting a row already gone deletes nothing), ``exported`` ones are
checked as above, ``archived`` and ``skipped`` ones are passed over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update

from crm.archiving.jsonl import read_entries
from crm.archiving.models import ArchivedConversation, ArchiveState, ConversationState, MessageArchive
from crm.db import utcnow
from crm.extensions import db
from crm.inbox.keys import forget_messages
from crm.inbox.models import Conversation, ConversationNote, Message

BATCH = 1000  # rows deleted per transaction (and per DELETE statement)


@dataclass
class _Deleting:
    archived_id: int
    conversation_id: int
    note_ids: list[int] = field(default_factory=list)
    chunk: list[tuple[int, datetime]] = field(default_factory=list)  # (message id, created_at)


class _Purge:
    def __init__(self, archive: MessageArchive):
        self.archive_id = archive.id
        self.workspace_id = archive.workspace_id
        self.key = archive.storage_key
        self.pending = 0  # rows changed in the open transaction

    def run(self, path: Path) -> None:
        current: _Deleting | None = None
        for entry in read_entries(path, self.key, self.workspace_id, self.archive_id):
            if entry.kind == "conversation":
                if current is not None:
                    self.finish(current)
                current = self.begin(entry.row)
            elif current is None:
                continue  # a conversation passed over: its lines too
            elif entry.kind == "note":
                current.note_ids.append(entry.row["id"])
            else:
                current.chunk.append((entry.row["id"], datetime.fromisoformat(entry.row["created_at"])))
                if len(current.chunk) >= BATCH:
                    self.delete_messages(current)
        if current is not None:
            self.finish(current)
        db.session.commit()

    def begin(self, exported: dict[str, Any]) -> _Deleting | None:
        row = db.session.execute(
            select(ArchivedConversation.id, ArchivedConversation.state).where(
                ArchivedConversation.archive_id == self.archive_id,
                ArchivedConversation.conversation_id == exported["id"],
            )
        ).first()
        if row is None or row.state not in (ConversationState.EXPORTED, ConversationState.DELETING):
            return None
        if row.state == ConversationState.EXPORTED:
            state = (
                ConversationState.DELETING if self.unchanged(row.id, exported) else ConversationState.SKIPPED
            )
            self.mark(row.id, state)
            if state == ConversationState.SKIPPED:
                return None
        return _Deleting(row.id, exported["id"])

    def unchanged(self, archived_id: int, exported: dict[str, Any]) -> bool:
        """The conversation is as it was exported. Its row is locked until the commit (PostgreSQL;
        SQLite has one writer at a time), so no message lands in it between this and the
        deletion of the first chunk."""
        from crm.whatsapp.models import Outbox, OutboxState

        archived = db.session.get(ArchivedConversation, archived_id)
        assert archived is not None
        conversation_id = exported["id"]
        live = db.session.execute(
            select(Conversation.lead_id, Conversation.account_id, Conversation.last_message_at)
            .where(Conversation.id == conversation_id)
            .with_for_update()
        ).first()
        last = exported.get("last_message_at")
        if (
            live is None
            or (live.lead_id, live.account_id) != (archived.lead_id, archived.account_id)
            or live.last_message_at != (datetime.fromisoformat(last) if last else None)
        ):
            return False
        counted = db.session.execute(
            select(
                select(func.count()).where(Message.conversation_id == conversation_id).scalar_subquery(),
                select(func.count())
                .where(ConversationNote.conversation_id == conversation_id)
                .scalar_subquery(),
            )
        ).one()
        if tuple(counted) != (archived.messages, archived.notes):
            return False
        waiting = db.session.scalar(
            select(Outbox.id)
            .where(
                Outbox.state.in_([OutboxState.QUEUED.value, OutboxState.SENDING.value]),
                Outbox.message_id.in_(select(Message.id).where(Message.conversation_id == conversation_id)),
            )
            .limit(1)
        )
        return waiting is None

    def mark(self, archived_id: int, state: ConversationState) -> None:
        db.session.execute(
            update(ArchivedConversation)
            .where(ArchivedConversation.id == archived_id)
            .values(state=state.value)
        )
        self.changed(1)

    def changed(self, rows: int) -> None:
        self.pending += rows
        if self.pending >= BATCH:
            db.session.commit()
            self.pending = 0

    def delete_messages(self, deleting: _Deleting) -> None:
        if not deleting.chunk:
            return
        ids = [message_id for message_id, _at in deleting.chunk]
        times = [at for _id, at in deleting.chunk]
        forget_messages(ids)
        db.session.execute(
            delete(Message).where(
                Message.id.in_(ids),
                # The chunk's period: PostgreSQL reads only the partitions that hold it.
                Message.created_at >= min(times),
                Message.created_at <= max(times),
                Message.conversation_id == deleting.conversation_id,
            )
        )
        deleting.chunk.clear()
        self.changed(len(ids))

    def finish(self, deleting: _Deleting) -> None:
        self.delete_messages(deleting)
        conversation_id = deleting.conversation_id
        for start in range(0, len(deleting.note_ids), BATCH):
            ids = deleting.note_ids[start : start + BATCH]
            db.session.execute(
                delete(ConversationNote).where(
                    ConversationNote.id.in_(ids), ConversationNote.conversation_id == conversation_id
                )
            )
            self.changed(len(ids))
        # Its row goes only when empty: a customer who wrote while the chunks were deleted keeps
        # the conversation (with their new message); the archived part stays in the file.
        db.session.execute(
            delete(Conversation).where(
                Conversation.id == conversation_id,
                ~select(Message.id).where(Message.conversation_id == conversation_id).exists(),
                ~select(ConversationNote.id)
                .where(ConversationNote.conversation_id == conversation_id)
                .exists(),
            )
        )
        self.mark(deleting.archived_id, ConversationState.ARCHIVED)


def purge_archive(archive_id: int, path: Path) -> None:
    """Delete what the archive holds, reading its verified local copy ``path``; the archive is
    then ``done``. Safe to call again after any interruption (see the module's docstring)."""
    archive = db.session.get(MessageArchive, archive_id)
    assert archive is not None and archive.state == ArchiveState.DELETING.value
    _Purge(archive).run(path)
    db.session.execute(
        update(MessageArchive)
        .where(MessageArchive.id == archive_id)
        .values(state=ArchiveState.DONE.value, finished_at=utcnow())
    )
    db.session.commit()
