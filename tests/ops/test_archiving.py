"""Archiving old conversations (``flask crm archive``, the nightly schedule) and restoring them from
the lead's page: the round trip gives back identical rows, only what is old goes, nothing is
deleted unless the stored file was verified, an interrupted deletion is finished by the next run,
and restores are idempotent, merge into newer conversations and never duplicate a message."""

from __future__ import annotations

import contextvars
import gzip
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from crm.archiving import purge
from crm.archiving.models import ArchivedConversation, ArchivedMedia, MessageArchive
from crm.archiving.restore import NothingArchived, restore_lead_history
from crm.archiving.runlock import ArchiveBusy, workspace_run_lock
from crm.auth.models import Workspace
from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Conversation, ConversationNote, Message, MessageKey
from crm.media.models import MediaFile
from crm.media.storage import LocalStorage, get_storage
from crm.whatsapp.events import InboundMessage
from crm.whatsapp.inbound import ingest_message
from crm.whatsapp.models import Outbox
from tests import factories
from tests.conftest import csrf_from, login

DAY = timedelta(days=1)


def run(app: Flask, *args: str) -> tuple[int, dict[str, Any] | None, str]:
    """``flask crm …`` in a context of its own, as from a shell: exit code, last JSON line, stderr."""
    db.session.commit()
    result = contextvars.Context().run(app.test_cli_runner().invoke, args=["crm", *args])
    lines = result.stdout.strip().splitlines()
    payload = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    db.session.expire_all()
    return result.exit_code, payload, result.stderr.strip()


pytestmark = pytest.mark.usefixtures("media_folder")  # this test's own storage (tests/conftest.py)


@dataclass
class Chat:
    account_id: int
    conversation_id: int
    lead_id: int
    message_ids: list[int]


def inbound_at(account_id: int, phone: str, at: datetime, text: str, pmid: str | None = None) -> int:
    """A customer's message dated ``at``, through the real ingest path; its id."""
    summary = ingest_message(
        account_id,
        InboundMessage(
            provider_message_id=pmid or f"wamid.{uuid.uuid4().hex}",
            type="text",
            text=text,
            timestamp=at,
            phone=phone,
            name="Cliente",
        ),
    )
    return summary.stored[0]


def history(p: factories.Person, account_id: int, phone: str, days_ago: int, messages: int = 3) -> Chat:
    """A conversation whose messages (in, then one answer with an agent's note) are ``days_ago`` old."""
    start = utcnow() - days_ago * DAY
    ids = [
        inbound_at(account_id, phone, start + i * timedelta(minutes=1), f"Olá {i}") for i in range(messages)
    ]
    first = db.session.get(Message, ids[0])
    assert first is not None
    conversation_id = first.conversation_id
    answered = start + messages * timedelta(minutes=1)
    ids.append(
        factories.stored_message(
            conversation_id,
            "Resposta",
            direction="out",
            provider_message_id=f"wamid.out.{uuid.uuid4().hex}",
            author_user_id=p.user_id,
            status="read",
            payload={"template": None},
            created_at=answered,
        )
    )
    db.session.add(
        ConversationNote(
            workspace_id=p.workspace_id,
            conversation_id=conversation_id,
            author_user_id=p.user_id,
            text="Cliente antigo",
            created_at=answered,
        )
    )
    db.session.execute(
        update(Conversation).where(Conversation.id == conversation_id).values(last_message_at=answered)
    )
    db.session.commit()
    conversation = db.session.get(Conversation, conversation_id)
    assert conversation is not None
    return Chat(account_id, conversation_id, conversation.lead_id, ids)


def snapshot(conversation_ids: list[int]) -> dict[str, list[dict[str, Any]]]:
    """Every column of the conversations, their messages, notes and message keys."""
    db.session.expire_all()
    tables = {"conversations": Conversation, "messages": Message, "notes": ConversationNote}
    taken: dict[str, list[dict[str, Any]]] = {}
    for name, model in tables.items():
        column = model.id if model is Conversation else model.conversation_id
        rows = db.session.execute(
            select(model.__table__).where(column.in_(conversation_ids)).order_by(model.id)
        ).mappings()
        taken[name] = [dict(row) for row in rows]
    message_ids = [m["id"] for m in taken["messages"]]
    taken["keys"] = [
        dict(row)
        for row in db.session.execute(
            select(MessageKey.__table__)
            .where(MessageKey.message_id.in_(message_ids))
            .order_by(MessageKey.message_id)
        ).mappings()
    ]
    return taken


def count(model: Any, *where: Any) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where)) or 0


@pytest.fixture
def account(owner: factories.Person) -> int:
    return factories.sandbox_account(owner)


# --- the round trip --------------------------------------------------------------------------


def test_archive_then_restore_gives_back_identical_rows(
    app: Flask, owner: factories.Person, account: int, media_folder: Path
) -> None:
    old = history(owner, account, "+5511999990001", days_ago=400)
    other = history(owner, account, "+5511999990002", days_ago=380, messages=2)
    before = snapshot([old.conversation_id, other.conversation_id])
    assert len(before["messages"]) == 7 and len(before["keys"]) == 7 and len(before["notes"]) == 2

    code, payload, err = run(app, "archive", "--older-than", "365d")

    assert code == 0, err
    assert payload is not None
    [result] = payload["archives"]
    assert result["state"] == "done" and result["archived"] == 2 and result["skipped"] == 0
    assert (result["conversations"], result["messages"], result["notes"]) == (2, 7, 2)
    assert snapshot([old.conversation_id, other.conversation_id]) == {
        "conversations": [],
        "messages": [],
        "notes": [],
        "keys": [],
    }
    assert count(MessageKey) == 0
    key = result["storage_key"]
    assert key.startswith(f"archives/w{owner.workspace_id}/") and key.endswith(".jsonl.gz")
    with gzip.open(media_folder / key, "rt", encoding="utf-8") as fh:
        lines = [json.loads(line) for line in fh]
    assert [line["type"] for line in lines][:2] == ["header", "conversation"]
    assert lines[-1] == {"type": "end", "conversations": 2, "notes": 2, "messages": 7}
    archive = db.session.get(MessageArchive, result["archive_id"])
    assert archive is not None and archive.sha256 == result["sha256"] and archive.bytes > 0

    restored = restore_lead_history(owner.workspace_id, old.lead_id)
    assert (restored.conversations, restored.messages, restored.notes) == (1, 4, 1)
    restore_lead_history(owner.workspace_id, other.lead_id)

    assert snapshot([old.conversation_id, other.conversation_id]) == before
    states = db.session.scalars(select(ArchivedConversation.state)).all()
    assert states == ["restored", "restored"]


def test_archives_go_to_s3_and_come_back(
    app: Flask, owner: factories.Person, account: int, s3_endpoint: str
) -> None:
    from crm.media.storage import S3Storage

    storage = S3Storage(
        "zapdesk-archives", "prefix", endpoint_url=s3_endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip
    storage.client.create_bucket(Bucket="zapdesk-archives")
    app.extensions["media_storage"] = storage  # put back by the media_folder fixture
    chat = history(owner, account, "+5511999990001", days_ago=400)
    before = snapshot([chat.conversation_id])

    code, payload, err = run(app, "archive", "--older-than", "365d")

    assert code == 0, err
    assert payload is not None
    [key] = [k for k, _at in storage.stored_keys()]
    assert key == payload["archives"][0]["storage_key"]
    assert storage.client.head_object(Bucket="zapdesk-archives", Key=f"prefix/{key}")["ContentLength"] > 0
    assert count(Message) == 0
    restore_lead_history(owner.workspace_id, chat.lead_id)
    assert snapshot([chat.conversation_id]) == before
    storage.delete(key)
    storage.client.delete_bucket(Bucket="zapdesk-archives")


def test_a_dry_run_says_what_would_go_and_changes_nothing(
    app: Flask, owner: factories.Person, account: int
) -> None:
    history(owner, account, "+5511999990001", days_ago=400)
    history(owner, account, "+5511999990002", days_ago=10)

    code, payload, err = run(app, "archive", "--older-than", "1y", "--dry-run")

    assert code == 0, err
    assert payload is not None and payload["dry_run"] is True
    [workspace] = payload["workspaces"]
    assert (workspace["conversations"], workspace["messages"], workspace["notes"]) == (1, 4, 1)
    assert count(MessageArchive) == 0 and count(Message) == 8


def test_only_old_conversations_with_nothing_waiting_to_be_sent_are_archived(
    app: Flask, owner: factories.Person, account: int
) -> None:
    old = history(owner, account, "+5511999990001", days_ago=400)
    recent = history(owner, account, "+5511999990002", days_ago=100)
    waiting = history(owner, account, "+5511999990003", days_ago=400)
    db.session.add(
        Outbox(workspace_id=owner.workspace_id, message_id=waiting.message_ids[-1], state="queued")
    )
    stranger = factories.person("Other", "owner@other.example", role="owner")
    elsewhere = history(stranger, factories.sandbox_account(stranger), "+5511999990004", days_ago=400)

    code, payload, err = run(app, "archive", "--older-than", "365", "--workspace", str(owner.workspace_id))

    assert code == 0, err
    assert payload is not None
    assert [r["archived"] for r in payload["archives"]] == [1]
    assert count(Conversation, Conversation.id == old.conversation_id) == 0
    for kept in (recent, waiting, elsewhere):
        assert count(Message, Message.conversation_id == kept.conversation_id) == 4
    assert count(MessageArchive, MessageArchive.workspace_id == stranger.workspace_id) == 0


# --- nothing deleted unless verified; interruptions ------------------------------------------


class CorruptingStorage(LocalStorage):
    """Stores files faithfully but hands back a changed copy (a bad disk, a broken proxy)."""

    def fetch(self, key: str, dest: Path) -> None:
        super().fetch(key, dest)
        data = bytearray(dest.read_bytes())
        data[len(data) // 2] ^= 0xFF
        dest.write_bytes(bytes(data))


class RefusingStorage(LocalStorage):
    """A storage that can't take the file (a full disk, a bucket that refuses writes)."""

    def save(self, key: str, source: Any, content_type: str) -> None:
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize(
    ("storage", "said"),
    [(CorruptingStorage, "checksum does not match"), (RefusingStorage, "could not be written: OSError")],
)
def test_a_file_that_is_not_stored_intact_deletes_nothing(
    app: Flask, owner: factories.Person, account: int, media_folder: Path, storage: type, said: str
) -> None:
    chat = history(owner, account, "+5511999990001", days_ago=400)
    before = snapshot([chat.conversation_id])
    app.extensions["media_storage"] = storage(media_folder)

    code, payload, err = run(app, "archive", "--older-than", "365d")

    assert code == 1
    assert said in err and len(err.splitlines()) == 1
    assert payload is not None
    [result] = payload["archives"]
    assert result["state"] == "failed" and result["archived"] == 0
    assert snapshot([chat.conversation_id]) == before
    assert count(ArchivedConversation) == 0
    assert not list(get_storage().stored_keys())  # the unusable file is removed


def test_a_deletion_interrupted_midway_is_finished_by_the_next_run(
    app: Flask, owner: factories.Person, account: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    chats = [history(owner, account, f"+551199999000{i}", days_ago=400, messages=5) for i in range(3)]
    ids = [c.conversation_id for c in chats]
    before = snapshot(ids)
    monkeypatch.setattr(purge, "BATCH", 2)  # a commit every two rows
    calls = {"n": 0}
    real = purge._Purge.delete_messages

    def dies_on_the_fourth_chunk(self: purge._Purge, deleting: purge._Deleting) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # the process is stopped here
        real(self, deleting)

    monkeypatch.setattr(purge._Purge, "delete_messages", dies_on_the_fourth_chunk)
    code, _payload, _err = run(app, "archive", "--older-than", "365d")
    assert code != 0
    [archive] = db.session.scalars(select(MessageArchive)).all()
    assert archive.state == "deleting"
    left = count(Message, Message.conversation_id.in_(ids))
    assert 0 < left < len(before["messages"])  # some committed, some not

    monkeypatch.setattr(purge._Purge, "delete_messages", real)
    code, payload, err = run(app, "archive", "--older-than", "365d")

    assert code == 0, err
    assert payload is not None
    [resumed] = payload["archives"]
    assert resumed["resumed"] is True and resumed["state"] == "done" and resumed["archived"] == 3
    assert count(Message, Message.conversation_id.in_(ids)) == 0 and count(Conversation) == 0
    for chat in chats:
        restore_lead_history(owner.workspace_id, chat.lead_id)
    assert snapshot(ids) == before  # nothing lost, nothing twice


def test_an_export_that_died_is_abandoned_and_done_again(
    app: Flask, owner: factories.Person, account: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = history(owner, account, "+5511999990001", days_ago=400)
    from crm.archiving import export

    def dies(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "verify_export", dies)
    assert run(app, "archive", "--older-than", "365d")[0] != 0
    [failed] = db.session.scalars(select(MessageArchive)).all()
    assert failed.state == "failed" and count(ArchivedConversation) == 0
    assert count(Message, Message.conversation_id == chat.conversation_id) == 4
    assert not list(get_storage().stored_keys())

    monkeypatch.undo()
    code, payload, err = run(app, "archive", "--older-than", "365d")
    assert code == 0, err
    assert payload is not None and [r["archived"] for r in payload["archives"]] == [1]


def test_a_conversation_written_to_after_the_export_is_left_alone(
    app: Flask, owner: factories.Person, account: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet = history(owner, account, "+5511999990001", days_ago=400)
    woken = history(owner, account, "+5511999990002", days_ago=400)
    from crm.archiving import export

    real = export.verify_export

    def customer_writes_meanwhile(*args: Any) -> None:
        real(*args)
        inbound_at(account, "+5511999990002", utcnow(), "Ainda estão aí?")

    monkeypatch.setattr(export, "verify_export", customer_writes_meanwhile)
    code, payload, err = run(app, "archive", "--older-than", "365d")

    assert code == 0, err
    assert payload is not None
    [result] = payload["archives"]
    assert (result["conversations"], result["archived"], result["skipped"]) == (2, 1, 1)
    assert count(Conversation, Conversation.id == quiet.conversation_id) == 0
    assert count(Message, Message.conversation_id == woken.conversation_id) == 5
    assert count(ArchivedConversation, ArchivedConversation.lead_id == woken.lead_id,
                 ArchivedConversation.state == "archived") == 0  # fmt: skip


def test_one_run_per_workspace_at_a_time(app: Flask, owner: factories.Person, account: int) -> None:
    history(owner, account, "+5511999990001", days_ago=400)
    with workspace_run_lock(owner.workspace_id):
        code, _payload, err = run(app, "archive", "--older-than", "365d")
    assert code == 1 and "Another archive run" in err
    assert count(MessageArchive) == 0
    with workspace_run_lock(owner.workspace_id), pytest.raises(ArchiveBusy):
        from crm.archiving.export import archive_workspace

        archive_workspace(owner.workspace_id, utcnow(), source="cli")


# --- restoring --------------------------------------------------------------------------------


def test_restoring_twice_changes_nothing(app: Flask, owner: factories.Person, account: int) -> None:
    chat = history(owner, account, "+5511999990001", days_ago=400)
    before = snapshot([chat.conversation_id])
    assert run(app, "archive", "--older-than", "365d")[0] == 0
    restore_lead_history(owner.workspace_id, chat.lead_id)

    with pytest.raises(NothingArchived):
        restore_lead_history(owner.workspace_id, chat.lead_id)
    # Even if the row still said "archived" (it can't: one transaction), nothing comes twice.
    db.session.execute(update(ArchivedConversation).values(state="archived", restored_at=None))
    db.session.commit()
    again = restore_lead_history(owner.workspace_id, chat.lead_id)

    assert (again.messages, again.notes, again.already_there) == (0, 0, 4)
    assert snapshot([chat.conversation_id]) == before


def test_restoring_merges_into_the_conversation_a_new_message_started(
    app: Flask, owner: factories.Person, account: int
) -> None:
    chat = history(owner, account, "+5511999990001", days_ago=400)
    history(owner, account, "+5511999990009", days_ago=1)  # the workspace goes on meanwhile
    archived_ids = chat.message_ids
    assert run(app, "archive", "--older-than", "365d")[0] == 0
    new_id = inbound_at(account, "+5511999990001", utcnow(), "Voltei!")
    new = db.session.get(Message, new_id)
    assert new is not None
    current = db.session.get(Conversation, new.conversation_id)
    assert current is not None and current.id != chat.conversation_id
    newest = current.last_message_at

    result = restore_lead_history(owner.workspace_id, chat.lead_id)

    assert (result.conversations, result.messages, result.notes) == (0, 4, 1)
    assert count(Conversation, Conversation.lead_id == chat.lead_id) == 1
    in_it = db.session.scalars(
        select(Message.id).where(Message.conversation_id == current.id).order_by(Message.created_at)
    ).all()
    assert in_it == [*archived_ids, new_id]
    assert count(ConversationNote, ConversationNote.conversation_id == current.id) == 1
    db.session.refresh(current)
    assert current.last_message_at == newest  # the inbox keeps it where the new message put it


def test_a_redelivered_archived_message_is_stored_again_and_not_restored_twice(
    app: Flask, owner: factories.Person, account: int
) -> None:
    """Its provider id left the database with it, so a delivery of the same message after the
    archive is a new message (Meta retries for 7 days; archiving takes at least 7, by default
    30). The restore then keeps that copy and restores the rest around it."""
    chat = history(owner, account, "+5511999990001", days_ago=400)
    first = db.session.get(Message, chat.message_ids[0])
    assert first is not None
    pmid, at = first.provider_message_id, first.created_at
    history(owner, account, "+5511999990009", days_ago=1)  # the workspace goes on meanwhile
    assert run(app, "archive", "--older-than", "365d")[0] == 0

    again = inbound_at(account, "+5511999990001", at, "Olá 0", pmid=pmid)

    copy = db.session.get(Message, again)
    assert copy is not None and copy.id != chat.message_ids[0]
    result = restore_lead_history(owner.workspace_id, chat.lead_id)
    assert (result.messages, result.already_there) == (3, 1)
    assert count(Message, Message.provider_message_id == pmid) == 1
    key = db.session.get(MessageKey, (account, pmid))
    assert key is not None and key.message_id == again
    assert count(Message, Message.conversation_id == copy.conversation_id) == 4


def test_an_archived_row_whose_id_was_taken_since_comes_back_with_a_new_one(
    app: Flask, owner: factories.Person, account: int
) -> None:
    """SQLite gives a new row the highest id + 1, so ids the archive freed at the top can be
    taken again (PostgreSQL's sequences never go back): nothing is lost, the row gets a new id."""
    chat = history(owner, account, "+5511999990001", days_ago=400)
    assert run(app, "archive", "--older-than", "365d")[0] == 0
    now = history(owner, account, "+5511999990002", days_ago=1)
    taken = chat.message_ids[0]
    if taken not in now.message_ids:  # PostgreSQL: take it by hand
        db.session.execute(update(Message).where(Message.id == now.message_ids[0]).values(id=taken))
        db.session.execute(
            update(MessageKey).where(MessageKey.message_id == now.message_ids[0]).values(message_id=taken)
        )
        db.session.commit()

    result = restore_lead_history(owner.workspace_id, chat.lead_id)

    assert result.messages == 4 and result.already_there == 0
    texts = db.session.scalars(
        select(Message.text)
        .join(Conversation)
        .where(Conversation.lead_id == chat.lead_id)
        .order_by(Message.created_at)
    ).all()
    assert texts == ["Olá 0", "Olá 1", "Olá 2", "Resposta"]
    assert count(Message, Message.id == taken) == 1 and count(Message) == 8
    assert count(MessageKey) == 8


def test_media_of_archived_messages_is_kept_and_comes_back(
    app: Flask, owner: factories.Person, account: int, media_folder: Path
) -> None:
    from crm.media.cleanup import sweep_orphans

    media_id = factories.media_file(owner)
    media = db.session.get(MediaFile, media_id)
    assert media is not None and media.storage_key
    message_id = db.session.scalar(select(Message.id).where(Message.media_file_id == media_id))
    message = db.session.get(Message, message_id)
    assert message is not None
    old = utcnow() - 400 * DAY
    db.session.execute(update(MessageKey).where(MessageKey.message_id == message.id).values(created_at=old))
    db.session.execute(update(Message).where(Message.id == message.id).values(created_at=old))
    db.session.execute(
        update(Conversation).where(Conversation.id == message.conversation_id).values(last_message_at=old)
    )
    db.session.execute(update(MediaFile).where(MediaFile.id == media_id).values(created_at=old))
    db.session.commit()
    lead_id = db.session.scalar(
        select(Conversation.lead_id).where(Conversation.id == message.conversation_id)
    )
    assert lead_id is not None

    assert run(app, "archive", "--older-than", "365d")[0] == 0
    assert count(Message, Message.media_file_id == media_id) == 0 and count(ArchivedMedia) == 1
    sweep_orphans(grace=timedelta(0))

    assert db.session.get(MediaFile, media_id) is not None
    assert (media_folder / media.storage_key).is_file()
    restore_lead_history(owner.workspace_id, lead_id)
    assert count(Message, Message.media_file_id == media_id) == 1 and count(ArchivedMedia) == 0


def test_a_merged_lead_takes_the_archived_history_along(
    app: Flask, owner: factories.Person, account: int
) -> None:
    from crm.leads.merge import merge_leads

    chat = history(owner, account, "+5511999990001", days_ago=400)
    assert run(app, "archive", "--older-than", "365d")[0] == 0
    keep = factories.lead(owner, "+5511988887777", "Maria")

    merge_leads(owner.workspace_id, keep, chat.lead_id)
    restore_lead_history(owner.workspace_id, keep)

    assert count(Message, Message.id.in_(chat.message_ids)) == 4
    assert (
        db.session.scalar(select(Conversation.lead_id).where(Conversation.id == chat.conversation_id)) == keep
    )


# --- the lead page ------------------------------------------------------------------------------


def test_the_lead_page_shows_the_archived_history_and_restores_it(
    app: Flask, client: FlaskClient, owner: factories.Person, account: int
) -> None:
    agent = factories.person("Acme", "agent@acme.example", role="agent")
    chat = history(owner, account, "+5511999990001", days_ago=400)
    assert run(app, "archive", "--older-than", "365d")[0] == 0
    assert login(client, agent.email).status_code == 302
    page = f"/leads/{chat.lead_id}"

    html = client.get(page).get_data(as_text=True)
    assert f'id="lead-archive-{chat.lead_id}"' in html
    assert "4 messages from" in html and "are archived" in html
    assert f'action="/leads/{chat.lead_id}/archive/restore"' in html

    assert client.post(f"{page}/archive/restore").status_code == 400  # no CSRF token
    assert count(Message) == 0
    response = client.post(f"{page}/archive/restore", data={"csrf_token": csrf_from(client, page)})

    assert response.status_code == 303 and response.headers["Location"].endswith(page)
    html = client.get(page).get_data(as_text=True)
    assert "4 archived messages restored." in html
    assert f'id="lead-archive-{chat.lead_id}"' not in html
    assert count(Message, Message.id.in_(chat.message_ids)) == 4
    restored_by = db.session.scalar(select(ArchivedConversation.restored_by_user_id))
    assert restored_by == agent.user_id


def test_another_workspace_cannot_see_or_restore_the_archive(
    app: Flask, client: FlaskClient, owner: factories.Person, account: int
) -> None:
    chat = history(owner, account, "+5511999990001", days_ago=400)
    assert run(app, "archive", "--older-than", "365d")[0] == 0
    stranger = factories.person("Other", "owner@other.example", role="owner")
    assert login(client, stranger.email).status_code == 302
    token = csrf_from(client, "/leads/new")

    assert client.get(f"/leads/{chat.lead_id}").status_code == 404
    response = client.post(f"/leads/{chat.lead_id}/archive/restore", data={"csrf_token": token})

    assert response.status_code == 404
    assert count(Message) == 0 and db.session.scalar(select(ArchivedConversation.state)) == "archived"


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_missing_or_damaged_archive_file_is_said_and_changes_nothing(
    app: Flask, logged_in: FlaskClient, owner: factories.Person, account: int, media_folder: Path, damage: str
) -> None:
    chat = history(owner, account, "+5511999990001", days_ago=400)
    code, payload, _err = run(app, "archive", "--older-than", "365d")
    assert code == 0 and payload is not None
    stored = media_folder / payload["archives"][0]["storage_key"]
    if damage == "missing":
        stored.unlink()
    else:
        stored.write_bytes(b"not an archive")
    page = f"/leads/{chat.lead_id}"

    response = logged_in.post(f"{page}/archive/restore", data={"csrf_token": csrf_from(logged_in, page)})

    assert response.status_code == 303
    html = logged_in.get(page).get_data(as_text=True)
    assert ("is missing from the storage" if damage == "missing" else "checksum does not match") in html
    assert f'id="lead-archive-{chat.lead_id}"' in html
    assert count(Message) == 0 and count(Conversation) == 0
    assert db.session.scalar(select(ArchivedConversation.state)) == "archived"


# --- the schedule -------------------------------------------------------------------------------


def test_admins_set_the_schedule_and_the_nightly_task_applies_it(
    app: Flask, logged_in: FlaskClient, owner: factories.Person, account: int
) -> None:
    from crm.archiving.tasks import archive_on_schedule_task

    assert 'href="/settings/archive"' in logged_in.get("/settings/").get_data(as_text=True)
    token = csrf_from(logged_in, "/settings/archive")
    too_soon = logged_in.post("/settings/archive", data={"csrf_token": token, "enabled": "y", "days": "10"})
    assert too_soon.status_code == 400 and "between 30 and 3650" in too_soon.get_data(as_text=True)
    workspace = db.session.get(Workspace, owner.workspace_id)
    assert workspace is not None and workspace.archive_after_days is None
    saved = logged_in.post("/settings/archive", data={"csrf_token": token, "enabled": "y", "days": "90"})
    assert saved.status_code == 302
    db.session.refresh(workspace)
    assert workspace.archive_after_days == 90

    old = history(owner, account, "+5511999990001", days_ago=100)
    young = history(owner, account, "+5511999990002", days_ago=40)
    stranger = factories.person("Other", "owner@other.example", role="owner")
    unscheduled = history(stranger, factories.sandbox_account(stranger), "+5511999990003", days_ago=400)
    db.session.commit()

    summary = archive_on_schedule_task.call_local()

    assert summary["conversations"] == 1 and summary["errors"] == 0
    assert count(Conversation, Conversation.id == old.conversation_id) == 0
    assert (
        count(Message, Message.conversation_id.in_([young.conversation_id, unscheduled.conversation_id])) == 8
    )
    [archive] = db.session.scalars(select(MessageArchive)).all()
    assert archive.source == "schedule" and archive.state == "done"
    html = logged_in.get("/settings/archive").get_data(as_text=True)
    assert f'id="archive-{archive.id}"' in html

    # Once everything in a file is restored, the nightly run removes the file.
    restore_lead_history(owner.workspace_id, old.lead_id)
    archive_on_schedule_task.call_local()
    db.session.refresh(archive)
    assert archive.state == "spent" and not list(get_storage().stored_keys())
    assert count(Conversation, Conversation.id == old.conversation_id) == 1  # restored: not taken again


def test_agents_cannot_change_the_schedule(client: FlaskClient, owner: factories.Person) -> None:
    agent = factories.person("Acme", "agent@acme.example", role="agent")
    assert login(client, agent.email).status_code == 302
    assert client.get("/settings/archive").status_code == 403
    token = csrf_from(client, "/settings/")
    response = client.post("/settings/archive", data={"csrf_token": token, "enabled": "y", "days": "90"})
    assert response.status_code == 403
    workspace = db.session.get(Workspace, owner.workspace_id)
    assert workspace is not None and workspace.archive_after_days is None


def test_turning_the_schedule_off(logged_in: FlaskClient, owner: factories.Person) -> None:
    workspace = db.session.get(Workspace, owner.workspace_id)
    assert workspace is not None
    workspace.archive_after_days = 365
    db.session.commit()
    token = csrf_from(logged_in, "/settings/archive")
    assert logged_in.post("/settings/archive", data={"csrf_token": token, "days": "365"}).status_code == 302
    db.session.refresh(workspace)
    assert workspace.archive_after_days is None


# --- the command's arguments --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "365x", "0", "3d", "-5d", "", "1.5y", "99999999d"])
def test_a_bad_older_than_is_a_clear_error_and_changes_nothing(
    app: Flask, owner: factories.Person, account: int, value: str
) -> None:
    chat = history(owner, account, "+5511999990001", days_ago=400)

    code, payload, err = run(app, "archive", "--older-than", value)

    assert code != 0 and payload is None
    assert "--older-than" in err and len(err.splitlines()) == 1
    assert count(MessageArchive) == 0 and count(Message, Message.conversation_id == chat.conversation_id) == 4


@pytest.mark.parametrize("args", [["--workspace", "999"], ["--workspace", "Nope"], []])
def test_an_unknown_workspace_or_a_missing_age_is_an_error(
    app: Flask, owner: factories.Person, account: int, args: list[str]
) -> None:
    history(owner, account, "+5511999990001", days_ago=400)
    if args:
        args = ["--older-than", "365d", *args]

    code, payload, err = run(app, "archive", *args)

    assert code != 0 and payload is None and err and len(err.splitlines()) == 1
    assert count(MessageArchive) == 0 and count(Message) == 4


@pytest.mark.parametrize(
    ("value", "days"), [("400", 400), ("400d", 400), ("60w", 420), ("2y", 730), (" 1Y ", 365)]
)
def test_ages_in_days_weeks_and_years(value: str, days: int) -> None:
    from crm.archiving.candidates import parse_age

    assert parse_age(value) == timedelta(days=days)
