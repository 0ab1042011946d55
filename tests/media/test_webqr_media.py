"""WebQR numbers: files go out through neonize's upload and the right waE2E message; customers'
files are downloaded (and decrypted) by the gateway that owns the session."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from crm.extensions import db
from crm.inbox.models import Message
from crm.whatsapp import webqr_session
from crm.whatsapp.models import WhatsAppAccount
from tests import factories
from tests.conftest import csrf_from
from tests.fakes.neonize_fake import FakeClient, FakeNeonize
from tests.media import files
from tests.media.conftest import attach, media_rows, stored_bytes
from tests.whatsapp.test_webqr_gateway import (  # noqa: F401  (fixtures)
    RunningGateway,
    fake,
    gateway,
    number,
    paired,
    wait_until,
)


@pytest.fixture(autouse=True)
def _quick_download_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webqr_session, "DOWNLOAD_POLL_SECONDS", 0.1)


@pytest.fixture
def phone(
    gateway: RunningGateway,  # noqa: F811
    owner: factories.Person,
    number: WhatsAppAccount,  # noqa: F811
) -> FakeClient:
    """The number's WhatsApp session, paired and connected through the gateway."""
    return paired(gateway, owner, number)


def test_a_photo_goes_out_as_an_image_message(
    logged_in: FlaskClient,
    number: WhatsAppAccount,  # noqa: F811
    fake: FakeNeonize,  # noqa: F811
    phone: FakeClient,
) -> None:
    conversation_id = factories.inbound(number.id, phone="+5511988887777")
    response = attach(logged_in, conversation_id, files.jpeg(2000, 1500), "foto.jpg", text="Olha a foto")
    assert response.status_code == 200
    wait_until(lambda: len(phone.sent_messages) == 1, what="send")
    sent = phone.sent_messages[0]
    assert sent.to == "5511988887777@s.whatsapp.net"
    image = sent.message.imageMessage
    assert image.caption == "Olha a foto" and image.mimetype == "image/jpeg"
    assert (image.width, image.height) == (1600, 1200)
    data, key = fake.media[image.directPath]
    assert image.mediaKey == key and data.startswith(b"\xff\xd8\xff") and len(data) == image.fileLength

    def outbound() -> Message | None:
        return db.session.scalar(select(Message).where(Message.direction == "out"))

    wait_until(lambda: (m := outbound()) is not None and m.status == "sent", what="sent recorded")
    message = outbound()
    assert message is not None and message.provider_message_id == sent.id


def test_a_document_keeps_its_name(
    logged_in: FlaskClient,
    number: WhatsAppAccount,  # noqa: F811
    phone: FakeClient,
) -> None:
    conversation_id = factories.inbound(number.id, phone="+5511988887777")
    attach(logged_in, conversation_id, files.pdf(), "Orçamento.pdf")
    wait_until(lambda: len(phone.sent_messages) == 1, what="send")
    document = phone.sent_messages[0].message.documentMessage
    assert (document.fileName, document.mimetype) == ("Orçamento.pdf", "application/pdf")


def test_a_customers_voice_note_is_downloaded_by_the_gateway(
    app: Flask,
    logged_in: FlaskClient,
    number: WhatsAppAccount,  # noqa: F811
    phone: FakeClient,
) -> None:
    voice = files.ogg_opus_header()
    phone.incoming_media("5511988887777", "audio", voice, "audio/ogg; codecs=opus", ptt=True)
    wait_until(lambda: bool(media_rows()) and media_rows()[0].status == "ready", what="download")
    [media] = media_rows()
    assert media.kind == "audio" and media.voice and media.mime_type == "audio/ogg"
    assert stored_bytes(app, media.storage_key) == voice
    assert media.source_encrypted is None  # the keys are dropped once the file is ours
    message = db.session.scalar(select(Message))
    assert message is not None and message.payload and "wire" not in message.payload["media"]
    thread = logged_in.get(f"/conversations/{message.conversation_id}").get_data(as_text=True)
    player = f'<audio controls preload="none" src="/media/{media.id}">'  # played in the thread
    assert player in thread and "Voice message" in thread


def test_a_failed_download_is_tried_again_on_request(
    logged_in: FlaskClient,
    phone: FakeClient,
    fake: FakeNeonize,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from crm.media import services

    monkeypatch.setattr(services, "MAX_ATTEMPTS", 1)  # the first failure is final
    original = fake.store_media

    def lost(data: bytes) -> tuple[str, bytes]:
        path, key = original(data)
        fake.media_lost.add(path)  # gone from WhatsApp's server, for now
        return path, key

    fake.store_media = lost  # type: ignore[method-assign]
    phone.incoming_media("5511988887777", "image", files.jpeg(), "image/jpeg", caption="foto")
    fake.store_media = original  # type: ignore[method-assign]
    wait_until(lambda: bool(media_rows()) and media_rows()[0].status == "failed", what="failed")
    media = media_rows()[0]
    assert media.error_title and "could not be processed" in media.error_title
    fake.media_lost.clear()  # WhatsApp's server has it again
    headers = {"HX-Request": "true", "X-CSRFToken": csrf_from(logged_in, "/")}
    assert logged_in.post(f"/media/{media.id}/retry", headers=headers).status_code == 200
    wait_until(lambda: media_rows()[0].status == "ready", what="retried download")
