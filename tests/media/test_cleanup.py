"""Files go with what carried them: a deleted message, a purged lead; the periodic sweep removes
whatever nothing points at any more (uploads never sent, rows whose messages were deleted)."""

from __future__ import annotations

import io
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Message
from crm.leads.models import Lead
from crm.leads.trash import purge_lead
from crm.media.cleanup import sweep_orphans
from crm.media.models import MediaFile
from crm.media.storage import get_storage
from crm.realtime.fragments import render_event
from tests import factories
from tests.conftest import csrf_from, login
from tests.media import files
from tests.media.conftest import media_rows

STRAY = "w1/2020/01/0123456789abcdef01234567.jpg"
UNSENT = "w1/2020/01/89abcdef0123456789abcdef-original.pdf"


def _keys() -> set[str]:
    return {key for key, _modified in get_storage().stored_keys()}


def _customer_photo(owner: factories.Person) -> tuple[int, MediaFile]:
    message_id = factories.inbound_file(factories.sandbox_account(owner), files.jpeg(), "foto.jpg")
    [media] = media_rows()
    assert media.storage_key in _keys() and media.thumbnail_key in _keys()
    return message_id, media


def test_deleting_a_message_removes_its_file(logged_in: FlaskClient, owner: factories.Person) -> None:
    message_id, media = _customer_photo(owner)
    keys = {media.storage_key, media.thumbnail_key}
    headers = {"HX-Request": "true", "X-CSRFToken": csrf_from(logged_in, "/")}
    response = logged_in.post(f"/messages/{message_id}/delete", headers=headers)
    assert response.status_code == 200 and response.get_data(as_text=True) == ""
    assert db.session.get(Message, message_id) is None and not media_rows()
    assert not keys & _keys()
    html = render_event(owner.workspace_id, {"type": "message.deleted", "message_id": message_id},
                        manager=False, user_id=owner.user_id)  # fmt: skip
    assert html == f'<div id="message-{message_id}" hx-swap-oob="delete"></div>'


def test_agents_cannot_delete_messages(client: FlaskClient, owner: factories.Person) -> None:
    message_id, media = _customer_photo(owner)
    agent = factories.person("Acme", "agente@acme.example", role="agent")
    assert login(client, agent.email).status_code == 302
    headers = {"HX-Request": "true", "X-CSRFToken": csrf_from(client, "/")}
    assert client.post(f"/messages/{message_id}/delete", headers=headers).status_code == 403
    assert media.storage_key in _keys()


def test_purging_a_lead_removes_the_files_of_their_conversations(app: Flask, owner: factories.Person) -> None:
    _message_id, media = _customer_photo(owner)
    keys = {media.storage_key, media.thumbnail_key}
    lead = db.session.scalar(select(Lead))
    assert lead is not None
    assert purge_lead(owner.workspace_id, lead.id) == 1
    assert not media_rows() and not keys & _keys() and db.session.scalar(select(Message)) is None


def test_the_sweep_removes_orphans_and_keeps_what_is_in_use(app: Flask, owner: factories.Person) -> None:
    _message_id, used = _customer_photo(owner)
    storage = get_storage()
    storage.save(STRAY, io.BytesIO(b"left by a crash"), "image/jpeg")  # no row names it
    storage.save("backups/notes.txt", io.BytesIO(b"someone else's"), "text/plain")  # a shared bucket
    a_day_ago = utcnow() - timedelta(days=1)
    unsent = MediaFile(
        workspace_id=owner.workspace_id, direction="out", kind="document", status="pending",
        original_key=UNSENT, created_at=a_day_ago,
    )  # fmt: skip
    storage.save(UNSENT, io.BytesIO(files.pdf()), "application/pdf")
    db.session.add(unsent)
    db.session.commit()
    assert sweep_orphans(grace=timedelta(0)) == {"rows": 1, "files": 1}
    assert [m.id for m in media_rows()] == [used.id]
    remaining = _keys()
    assert {used.storage_key, used.thumbnail_key} <= remaining
    assert STRAY not in remaining and UNSENT not in remaining
    assert "backups/notes.txt" in remaining  # not a key of ours: never touched


def test_the_sweep_leaves_recent_uploads_alone(app: Flask, owner: factories.Person) -> None:
    get_storage().save("w1/2026/12/just-now.pdf", io.BytesIO(files.pdf()), "application/pdf")
    sweep_orphans()  # six hours of grace: an upload on its way to a message is never taken
    assert "w1/2026/12/just-now.pdf" in _keys()
    get_storage().delete("w1/2026/12/just-now.pdf")
