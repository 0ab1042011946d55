"""A lead's archived history back into the database (the lead page's "Restore").

Every archive file involved is fetched through the storage and checked against its SHA-256
before anything is written; then, in one transaction (all or nothing), each archived
conversation's lines are streamed back:

- the conversation: the one the lead has now on that number if there is one (a new message may
  have started it since), else its archived row with its original id;
- its messages and notes with their original ids and times, and the messages' provider ids in
  ``message_keys`` (``insert_ignoring_conflicts``);
- its ``last_message_at`` moved forward to its newest message, so the inbox sorts it right.

Restoring again changes nothing: rows already there (same id, same message) are passed over and
keys already there are kept. A message whose provider id is in the database again under another
id (the provider delivered it again after it was archived) is not restored twice: the copy in the
database stays. On SQLite an id freed by the archive can have been reused by a new row; an
archived row whose id is taken by another row gets a new id.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import Table, delete, insert, select, tuple_, update

from crm.archiving.jsonl import damaged, decode_row, fetch_verified, read_entries
from crm.archiving.models import (
    ArchivedConversation,
    ArchivedMedia,
    ConversationState,
    MessageArchive,
)
from crm.auth.models import User
from crm.db import insert_ignoring_conflicts, utcnow
from crm.errors import Conflict
from crm.extensions import db
from crm.inbox.models import Conversation, ConversationNote, Message, MessageKey
from crm.media.models import MediaFile

CHUNK = 500


class NothingArchived(Conflict):
    code = "nothing_archived"

    def default_message(self) -> str:
        return _("This lead has no archived history to restore.")


@dataclass
class RestoreResult:
    conversations: int = 0
    messages: int = 0
    notes: int = 0
    already_there: int = 0  # messages found in the database (restored before, or delivered again)


def _existing(column: Any, ids: Iterable[int | None]) -> set[int]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return set()
    return set(db.session.scalars(select(column).where(column.in_(wanted))))


class _Restore:
    def __init__(self, workspace_id: int, lead_id: int, key: str):
        self.workspace_id = workspace_id
        self.lead_id = lead_id
        self.key = key
        self.result = RestoreResult()
        self.conversations: Table = Conversation.__table__  # type: ignore[assignment]
        self.messages: Table = Message.__table__  # type: ignore[assignment]
        self.notes: Table = ConversationNote.__table__  # type: ignore[assignment]

    def decoded(self, table: Table, raw: dict[str, Any]) -> dict[str, Any]:
        row = decode_row(table, raw, self.key)
        if row.get("workspace_id", self.workspace_id) != self.workspace_id:
            raise damaged(self.key, _("a row belongs to another workspace"))
        row["workspace_id"] = self.workspace_id
        return row

    def conversation(self, raw: dict[str, Any], archived: ArchivedConversation) -> int:
        """The conversation the lines go into: the lead's on that number now, else the archived
        row again (original id when it is free)."""
        live = db.session.scalar(
            select(Conversation.id).where(
                Conversation.account_id == archived.account_id, Conversation.lead_id == self.lead_id
            )
        )
        if live is not None:
            return live
        row = self.decoded(self.conversations, raw)
        row.update(lead_id=self.lead_id, account_id=archived.account_id)
        assignee = row.get("assignee_id")
        if assignee is not None and assignee not in _existing(User.id, [assignee]):
            row["assignee_id"] = None  # no such user any more
        created = db.session.execute(
            insert_ignoring_conflicts(self.conversations).values(row).returning(self.conversations.c.id)
        ).scalar()
        if created is None:  # the id was taken by another row (SQLite reuses freed ids)
            row.pop("id")
            created = db.session.execute(
                insert(self.conversations).values(row).returning(self.conversations.c.id)
            ).scalar_one()
        self.result.conversations += 1
        return int(created)

    def messages_into(self, conversation_id: int, raws: list[dict[str, Any]]) -> None:
        rows = [self.decoded(self.messages, raw) for raw in raws]
        there = {
            row.id: (row.account_id, row.provider_message_id, row.created_at)
            for row in db.session.execute(
                select(Message.id, Message.account_id, Message.provider_message_id, Message.created_at).where(
                    Message.id.in_([r["id"] for r in rows])
                )
            )
        }
        pairs = [(r["account_id"], r["provider_message_id"]) for r in rows if r.get("provider_message_id")]
        owners = (
            {
                (k.account_id, k.provider_message_id): k.message_id
                for k in db.session.execute(
                    select(
                        MessageKey.account_id, MessageKey.provider_message_id, MessageKey.message_id
                    ).where(tuple_(MessageKey.account_id, MessageKey.provider_message_id).in_(pairs))
                )
            }
            if pairs
            else {}
        )
        users = _existing(User.id, (r.get("author_user_id") for r in rows))
        media = _existing(MediaFile.id, (r.get("media_file_id") for r in rows))
        inserts: list[dict[str, Any]] = []
        renamed: list[dict[str, Any]] = []  # their id now names another message (SQLite)
        keys: list[dict[str, Any]] = []
        for row in rows:
            pair = (row["account_id"], row.get("provider_message_id"))
            owner = owners.get(pair)
            if (owner is not None and owner != row["id"]) or there.get(row["id"]) == (
                *pair,
                row["created_at"],
            ):
                self.result.already_there += 1  # delivered again since, or restored before
                if owner is None and pair[1]:
                    keys.append(self.key_row(row, row["id"]))
                continue
            row["conversation_id"] = conversation_id
            row["author_user_id"] = row.get("author_user_id") if row.get("author_user_id") in users else None
            row["media_file_id"] = row.get("media_file_id") if row.get("media_file_id") in media else None
            (renamed if row["id"] in there else inserts).append(row)
            self.result.messages += 1
        if inserts:
            db.session.execute(insert(self.messages), inserts)
        for row in renamed:  # after the others: a new id must not take one of theirs
            row.pop("id")
            row["id"] = db.session.execute(
                insert(self.messages).values(row).returning(self.messages.c.id)
            ).scalar_one()
        keys.extend(
            self.key_row(row, row["id"]) for row in inserts + renamed if row.get("provider_message_id")
        )
        if keys:
            db.session.execute(insert_ignoring_conflicts(MessageKey), keys)

    @staticmethod
    def key_row(row: dict[str, Any], message_id: int) -> dict[str, Any]:
        return {
            "account_id": row["account_id"],
            "provider_message_id": row["provider_message_id"],
            "message_id": message_id,
            "created_at": row["created_at"],
        }

    def notes_into(self, conversation_id: int, raws: list[dict[str, Any]]) -> None:
        rows = [self.decoded(self.notes, raw) for raw in raws]
        there = {
            row.id: (row.conversation_id, row.created_at)
            for row in db.session.execute(
                select(
                    ConversationNote.id, ConversationNote.conversation_id, ConversationNote.created_at
                ).where(ConversationNote.id.in_([r["id"] for r in rows]))
            )
        }
        users = _existing(User.id, (r.get("author_user_id") for r in rows))
        inserts: list[dict[str, Any]] = []
        renamed: list[dict[str, Any]] = []
        for row in rows:
            if there.get(row["id"]) == (conversation_id, row["created_at"]):
                continue  # restored before
            row["conversation_id"] = conversation_id
            row["author_user_id"] = row.get("author_user_id") if row.get("author_user_id") in users else None
            (renamed if row["id"] in there else inserts).append(row)
            self.result.notes += 1
        if inserts:
            db.session.execute(insert(self.notes), inserts)
        for row in renamed:
            row.pop("id")
            db.session.execute(insert(self.notes).values(row))

    def move_forward(self, conversation_id: int, last: datetime | None) -> None:
        if last is None:
            return
        db.session.execute(
            update(Conversation)
            .where(
                Conversation.id == conversation_id,
                (Conversation.last_message_at.is_(None)) | (Conversation.last_message_at < last),
            )
            .values(last_message_at=last)
        )


def _restore_file(restore: _Restore, path: Path, archive: MessageArchive, wanted: dict[int, Any]) -> set[int]:
    """Stream one archive file, restoring the wanted conversations; their conversation ids now."""
    targets: set[int] = set()
    target: int | None = None
    archived: ArchivedConversation | None = None
    notes: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []

    def flush() -> None:
        if target is not None:
            if notes:
                restore.notes_into(target, notes)
            if messages:
                restore.messages_into(target, messages)
        notes.clear()
        messages.clear()

    for entry in read_entries(path, archive.storage_key, archive.workspace_id, archive.id):
        if entry.kind == "conversation":
            flush()
            if archived is not None and target is not None:
                restore.move_forward(target, archived.last_message_at)
            archived = wanted.get(entry.row.get("id"))  # type: ignore[arg-type]
            target = restore.conversation(entry.row, archived) if archived is not None else None
            if target is not None:
                targets.add(target)
        elif target is not None:
            (notes if entry.kind == "note" else messages).append(entry.row)
            if len(notes) + len(messages) >= CHUNK:
                flush()
    flush()
    if archived is not None and target is not None:
        restore.move_forward(target, archived.last_message_at)
    return targets


def restore_lead_history(workspace_id: int, lead_id: int, *, user_id: int | None = None) -> RestoreResult:
    """Restore every archived conversation of the lead, or nothing: NotFound for a lead of
    another workspace, NothingArchived, ArchiveMissing or ArchiveCorrupt (nothing changed)."""
    from crm.leads.services import get_lead
    from crm.realtime.broker import publish_after_commit

    get_lead(workspace_id, lead_id)
    archived = list(
        db.session.scalars(
            select(ArchivedConversation)
            .where(
                ArchivedConversation.workspace_id == workspace_id,
                ArchivedConversation.lead_id == lead_id,
                ArchivedConversation.state == ConversationState.ARCHIVED.value,
            )
            .order_by(ArchivedConversation.archive_id, ArchivedConversation.conversation_id)
        )
    )
    if not archived:
        raise NothingArchived()
    by_archive: dict[int, dict[int, ArchivedConversation]] = {}
    for row in archived:
        by_archive.setdefault(row.archive_id, {})[row.conversation_id] = row
    result = RestoreResult()
    try:
        with tempfile.TemporaryDirectory(prefix="zapdesk-restore-") as folder:
            files: dict[int, tuple[MessageArchive, Path]] = {}
            for archive_id in by_archive:  # every file checked before anything is written
                archive = db.session.get(MessageArchive, archive_id)
                assert archive is not None
                dest = Path(folder) / f"{archive_id}.jsonl.gz"
                files[archive_id] = archive, fetch_verified(archive.storage_key, archive.sha256, dest)
            targets: set[int] = set()
            for archive_id, wanted in by_archive.items():
                archive, path = files[archive_id]
                restore = _Restore(workspace_id, lead_id, archive.storage_key)
                targets |= _restore_file(restore, path, archive, wanted)
                for field in ("conversations", "messages", "notes", "already_there"):
                    setattr(result, field, getattr(result, field) + getattr(restore.result, field))
            ids = [row.id for row in archived]
            db.session.execute(
                update(ArchivedConversation)
                .where(ArchivedConversation.id.in_(ids))
                .values(
                    state=ConversationState.RESTORED.value, restored_at=utcnow(), restored_by_user_id=user_id
                )
            )
            # The files are carried by messages again: the orphan sweep sees them.
            db.session.execute(delete(ArchivedMedia).where(ArchivedMedia.archived_conversation_id.in_(ids)))
            for conversation_id in sorted(targets):
                publish_after_commit(
                    workspace_id, {"type": "conversation.updated", "conversation_id": conversation_id}
                )
            db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return result
