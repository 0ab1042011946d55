"""Writing an archive file from the database, and verifying a stored copy against what was
written (see ``crm.archiving.export`` for the run around them)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import Table, insert, select

from crm.archiving.candidates import old_conversations
from crm.archiving.jsonl import ArchiveWriter, Counts, damaged, read_entries
from crm.archiving.models import ArchivedConversation, ArchivedMedia
from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Conversation, ConversationNote, Message

BATCH_CONVERSATIONS = 200
STREAM_ROWS = 2000


def tables() -> tuple[Table, Table, Table]:
    return Conversation.__table__, ConversationNote.__table__, Message.__table__  # type: ignore[return-value]


@dataclass
class _Written:
    messages: int = 0
    first: datetime | None = None
    last: datetime | None = None
    media: set[int] = field(default_factory=set)


def write_export(workspace_id: int, archive_id: int, cutoff: datetime, path: Path) -> Counts:
    """Write the file, a batch of conversations at a time (their messages streamed, not loaded),
    and record each batch's conversations as it goes."""
    conversations, notes, messages = tables()
    where = old_conversations(workspace_id, cutoff)
    header = {
        "workspace_id": workspace_id,
        "archive_id": archive_id,
        "cutoff": cutoff,
        "created_at": utcnow(),
    }
    writer = ArchiveWriter(path, header)
    try:
        after = 0
        while True:
            batch = (
                db.session.execute(
                    select(conversations)
                    .where(*where, conversations.c.id > after)
                    .order_by(conversations.c.id)
                    .limit(BATCH_CONVERSATIONS)
                )
                .mappings()
                .all()
            )
            if not batch:
                break
            after = batch[-1]["id"]
            ids = [row["id"] for row in batch]
            notes_of: dict[int, list[Any]] = defaultdict(list)
            for note in db.session.execute(
                select(notes)
                .where(notes.c.conversation_id.in_(ids))
                .order_by(notes.c.conversation_id, notes.c.created_at, notes.c.id)
            ).mappings():
                notes_of[note["conversation_id"]].append(note)
            stream = db.session.execute(
                select(messages)
                .where(messages.c.conversation_id.in_(ids))
                .order_by(messages.c.conversation_id, messages.c.created_at, messages.c.id),
                execution_options={"yield_per": STREAM_ROWS},
            ).mappings()
            written: dict[int, _Written] = {}
            peek = next(stream, None)
            for conversation in batch:
                writer.write("conversation", conversation)
                for note in notes_of[conversation["id"]]:
                    writer.write("note", note)
                done = written[conversation["id"]] = _Written()
                while peek is not None and peek["conversation_id"] == conversation["id"]:
                    writer.write("message", peek)
                    done.messages += 1
                    done.first = done.first or peek["created_at"]
                    done.last = peek["created_at"]
                    if peek["media_file_id"] is not None:
                        done.media.add(peek["media_file_id"])
                    peek = next(stream, None)
            stream.close()
            _record(workspace_id, archive_id, batch, notes_of, written)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def _record(
    workspace_id: int,
    archive_id: int,
    batch: Sequence[Any],
    notes_of: dict[int, list[Any]],
    written: dict[int, _Written],
) -> None:
    rows = [
        {
            "archive_id": archive_id,
            "workspace_id": workspace_id,
            "lead_id": c["lead_id"],
            "account_id": c["account_id"],
            "conversation_id": c["id"],
            "messages": written[c["id"]].messages,
            "notes": len(notes_of[c["id"]]),
            "first_message_at": written[c["id"]].first,
            "last_message_at": written[c["id"]].last,
            "state": "exported",
        }
        for c in batch
    ]
    returned = db.session.execute(
        insert(ArchivedConversation).returning(ArchivedConversation.conversation_id, ArchivedConversation.id),
        rows,
    )
    ids: dict[int, int] = {conversation_id: archived_id for conversation_id, archived_id in returned}
    media = [
        {"archived_conversation_id": ids[conversation_id], "media_file_id": media_file_id}
        for conversation_id, done in written.items()
        for media_file_id in sorted(done.media)
    ]
    if media:
        db.session.execute(insert(ArchivedMedia), media)
    db.session.commit()


def _recorded(archive_id: int) -> Iterator[tuple[int, int, int]]:
    """(conversation id, messages, notes) of the archive's conversations, in id order, by pages."""
    after = 0
    while True:
        page = db.session.execute(
            select(
                ArchivedConversation.conversation_id,
                ArchivedConversation.messages,
                ArchivedConversation.notes,
            )
            .where(
                ArchivedConversation.archive_id == archive_id, ArchivedConversation.conversation_id > after
            )
            .order_by(ArchivedConversation.conversation_id)
            .limit(1000)
        ).all()
        if not page:
            return
        for row in page:
            yield row[0], row[1], row[2]
        after = page[-1][0]


def verify_export(workspace_id: int, archive_id: int, key: str, path: Path, written: Counts) -> None:
    """Every line of the fetched file read back: each conversation holds exactly the messages and
    notes recorded for it, in the same order, and the totals are those written."""
    recorded = _recorded(archive_id)
    seen = Counts()
    current: list[int] | None = None  # [conversation id, messages, notes]

    def check(done: list[int] | None) -> None:
        if done is not None and next(recorded, None) != tuple(done):
            raise damaged(key, _("conversation %(id)d does not hold what was exported", id=done[0]))

    for entry in read_entries(path, key, workspace_id, archive_id):
        seen.add(entry.kind)
        conversation_id = entry.row.get("id" if entry.kind == "conversation" else "conversation_id")
        if entry.kind == "conversation":
            check(current)
            if not isinstance(conversation_id, int) or (
                current is not None and conversation_id <= current[0]
            ):
                raise damaged(key, _("its conversations are out of order"))
            current = [conversation_id, 0, 0]
        elif current is None or conversation_id != current[0]:
            raise damaged(key, _("a line is in the wrong conversation"))
        else:
            current[1 if entry.kind == "message" else 2] += 1
    check(current)
    if next(recorded, None) is not None or seen != written:
        raise damaged(key, _("it does not hold every conversation exported"))
