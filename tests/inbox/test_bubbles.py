"""Remembered message bubbles are never stale: a change to the message, its file, the reader's
language or zone shows at once, and the key covers every column the bubble template reads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from crm.auth.models import User
from crm.extensions import db
from crm.inbox import bubbles
from crm.inbox.models import Message
from crm.media.models import MediaFile
from crm.settings.services import get_workspace
from tests import factories

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "inbox"


@pytest.fixture(autouse=True)
def _fresh_bubbles() -> Iterator[None]:
    bubbles.forget_all()
    yield
    bubbles.forget_all()


def _thread(client: FlaskClient, conversation_id: int) -> str:
    response = client.get(f"/conversations/{conversation_id}", headers={"HX-Request": "true"})
    assert response.status_code == 200
    return response.get_data(as_text=True)


def _bubble_of(page: str, message_id: int) -> str:
    found = [part for part in page.split('<div class="bubble') if f'id="message-{message_id}"' in part]
    assert len(found) == 1, f"no bubble for message {message_id}"
    return found[0].split('<div class="notes')[0]


def test_a_new_status_text_or_error_shows_at_once(logged_in: FlaskClient, owner: factories.Person) -> None:
    conversation_id = factories.inbound(factories.sandbox_account(owner))
    message_id = factories.stored_message(conversation_id, "Primeira versão", direction="out")
    first = _bubble_of(_thread(logged_in, conversation_id), message_id)
    assert "status-sent" in first and "Primeira versão" in first
    assert _bubble_of(_thread(logged_in, conversation_id), message_id) == first  # remembered, same

    message = db.session.get(Message, message_id)
    assert message is not None
    message.status, message.error_title = "failed", "Number not on WhatsApp"
    db.session.commit()
    failed = _bubble_of(_thread(logged_in, conversation_id), message_id)
    assert "status-failed" in failed and "Number not on WhatsApp" in failed

    message.text = "Segunda versão"
    db.session.commit()
    assert "Segunda versão" in _bubble_of(_thread(logged_in, conversation_id), message_id)


def test_a_file_ready_later_shows_at_once(logged_in: FlaskClient, owner: factories.Person) -> None:
    media_id = factories.media_file(owner)
    media = db.session.get(MediaFile, media_id)
    assert media is not None
    message = db.session.scalars(db.select(Message).where(Message.media_file_id == media_id)).one()
    media.status = "downloading"
    db.session.commit()
    assert "Downloading the file" in _bubble_of(_thread(logged_in, message.conversation_id), message.id)
    media.status = "ready"
    db.session.commit()
    ready = _bubble_of(_thread(logged_in, message.conversation_id), message.id)
    assert f"/media/{media_id}" in ready and "Downloading the file" not in ready


def test_each_reader_sees_their_language_and_zone(
    app: Flask, logged_in: FlaskClient, owner: factories.Person
) -> None:
    conversation_id = factories.inbound(factories.sandbox_account(owner))
    message_id = factories.stored_message(conversation_id, "Oi", direction="out", status="delivered")
    english = _bubble_of(_thread(logged_in, conversation_id), message_id)
    assert 'title="Delivered"' in english  # the tick's status
    assert 'aria-label="Delete from Zapdesk"' in english and "The customer keeps their copy." in english

    user = db.session.get(User, owner.user_id)
    assert user is not None
    user.locale = "pt_BR"
    db.session.commit()
    portuguese = _bubble_of(_thread(logged_in, conversation_id), message_id)
    assert "Delete from Zapdesk" not in portuguese and portuguese != english
    assert 'title="Entregue"' in portuguese
    assert 'aria-label="Excluir do Zapdesk"' in portuguese
    assert "O cliente continua com a cópia dele." in portuguese  # the confirmation

    times = re.compile(r'<small class="meta">\s*(.*?)\s*<')
    workspace = get_workspace(owner.workspace_id)
    before = times.search(portuguese)
    workspace.timezone = "Asia/Tokyo" if workspace.timezone != "Asia/Tokyo" else "America/Sao_Paulo"
    db.session.commit()
    after = times.search(_bubble_of(_thread(logged_in, conversation_id), message_id))
    assert before and after and before.group(1) != after.group(1)


def test_the_key_holds_every_column_the_template_reads() -> None:
    """If the bubble template starts reading something that is not a column of the message or of
    its file, the remembered bubble could go stale: this fails first."""
    message_columns = {c.key for c in Message.__table__.columns} | {"media_file"}
    # inline_type is worked out from mime_type alone.
    media_columns = {c.key for c in MediaFile.__table__.columns} | {"inline_type"}
    for name, allowed in (("_message.html", message_columns), ("_media.html", media_columns)):
        source = (TEMPLATES / name).read_text()
        read = set(re.findall(r"\bmessage\.(\w+)", source))
        if name == "_media.html":
            read = {"id"} & read  # the media template reads only the message id
            read |= set(re.findall(r"(?<!['\"])\bmedia\.(\w+)", source))  # not 'media.file' endpoints
            allowed = allowed | {"id"}
        assert read, name
        assert read <= allowed, f"{name} reads {sorted(read - allowed)}: add them to crm.inbox.bubbles' key"


def test_the_memory_is_bounded(
    logged_in: FlaskClient, owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bubbles, "MAX_BUBBLES", 5)
    conversation_id = factories.inbound(factories.sandbox_account(owner))
    for n in range(12):
        factories.stored_message(conversation_id, f"m{n}", direction="out")
    page = _thread(logged_in, conversation_id)
    assert all(f">m{n}<" in page for n in range(12))
    assert len(bubbles._bubbles) == 5


# --- the conversation list's rows -------------------------------------------------------------


def _row_of(client: FlaskClient, conversation_id: int) -> str:
    response = client.get("/?view=all&status=open", headers={"HX-Request": "true"})
    assert response.status_code == 200
    found = [
        part.split("</li>")[0]
        for part in response.get_data(as_text=True).split("<li ")
        if f'id="conversation-{conversation_id}"' in part
    ]
    assert len(found) == 1, f"no row for conversation {conversation_id}"
    return found[0]


def test_a_list_row_shows_a_new_message_count_name_tag_or_assignee_at_once(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    from crm.inbox.models import Conversation
    from crm.leads.models import Lead, LeadTag

    conversation_id = factories.inbound(factories.sandbox_account(owner), text="Primeira", name="Ana")
    first = _row_of(logged_in, conversation_id)
    assert "Primeira" in first and "Ana" in first and 'data-unread="1"' in first
    assert _row_of(logged_in, conversation_id) == first  # remembered, same

    factories.stored_message(conversation_id, "Segunda", direction="out")
    conversation = db.session.get(Conversation, conversation_id)
    assert conversation is not None
    lead = db.session.get(Lead, conversation.lead_id)
    assert lead is not None
    assert "You: Segunda" in _row_of(logged_in, conversation_id)  # the new last message

    conversation.unread_count, conversation.assignee_id = 0, owner.user_id
    db.session.commit()
    row = _row_of(logged_in, conversation_id)
    assert (
        'data-unread="0"' in row and f'data-assignee="{owner.user_id}"' in row and "unread-count" not in row
    )

    lead.name = "Ana Souza"
    db.session.add(LeadTag(workspace_id=owner.workspace_id, lead_id=lead.id, name="VIP", key="vip"))
    db.session.commit()
    row = _row_of(logged_in, conversation_id)
    assert "Ana Souza" in row and 'data-tags="vip"' in row


def test_the_row_key_holds_everything_the_row_template_reads() -> None:
    """If the row template (or the one-line summary of a message) starts reading something the
    key leaves out, a remembered row could go stale: this fails first."""
    import inspect

    from crm.templating import message_summary

    source = (TEMPLATES / "_conversation_item.html").read_text()
    lead_reads = set(re.findall(r"\bconversation\.lead\.(\w+)", source))
    conversation_reads = set(re.findall(r"\bconversation\.(\w+)", source)) - {"lead"}
    preview_reads = set(re.findall(r"\bpreview\.(\w+)", source))
    preview_reads |= set(re.findall(r"\bmessage\.(\w+)", inspect.getsource(message_summary)))
    assert lead_reads and conversation_reads and preview_reads
    assert lead_reads <= set(bubbles.ROW_FIELDS["lead"]), sorted(lead_reads)
    assert conversation_reads <= set(bubbles.ROW_FIELDS["conversation"]), sorted(conversation_reads)
    assert preview_reads <= set(bubbles.ROW_FIELDS["preview"]), sorted(preview_reads)
    assert "preview|message_summary" in source  # the only filter fed the whole message
