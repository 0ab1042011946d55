"""Attaching files in the inbox: checked by content, limited per kind and number, prepared in a
task and sent through the outbox. Mistakes answer in the composer and store nothing."""

from __future__ import annotations

import io
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import select

from crm.extensions import db
from crm.inbox.models import Message
from crm.leads.models import Lead
from crm.media.limits import MB, limit_for
from crm.media.models import MediaFile
from crm.media.storage import get_storage
from tests.conftest import csrf_from
from tests.fakes.graph_api import GraphEmulator
from tests.media import files
from tests.media.conftest import Chat, attach, media_rows, message_count, stored_bytes


def _outbound() -> list[Message]:
    db.session.expire_all()
    return list(db.session.scalars(select(Message).where(Message.direction == "out").order_by(Message.id)))


def test_a_photo_is_compressed_stripped_and_sent(
    app: Flask, logged_in: FlaskClient, sandbox_chat: Chat
) -> None:
    original = files.jpeg(3000, 2000, orientation=6, gps=True, noise=True)
    response = attach(logged_in, sandbox_chat.conversation_id, original, "IMG_0001.JPG", text="Seu pedido")
    assert response.status_code == 200, response.get_data(as_text=True)
    [message] = _outbound()
    assert message.type == "image" and message.text == "Seu pedido" and message.status == "delivered"
    [media] = media_rows()
    assert media.status == "ready" and media.mime_type == "image/jpeg" and media.original_key is None
    sent = Image.open(io.BytesIO(stored_bytes(app, media.storage_key)))
    assert sent.size == (1067, 1600) == (media.width, media.height)  # upright (was 3000x2000 sideways)
    assert not sent.getexif()  # no EXIF, so no GPS
    assert media.size is not None and media.size <= limit_for("sandbox", "image").max_bytes
    assert (
        media.thumbnail_key and Image.open(io.BytesIO(stored_bytes(app, media.thumbnail_key))).size[1] == 320
    )


def test_cloud_numbers_upload_the_prepared_file_then_send_its_id(
    logged_in: FlaskClient, cloud_chat: Chat, graph_api: GraphEmulator
) -> None:
    response = attach(logged_in, cloud_chat.conversation_id, files.pdf(), "Orçamento março.pdf", text="Segue")
    assert response.status_code == 200
    [message] = _outbound()
    assert message.status == "sent" and message.provider_message_id == graph_api.sent[0].wamid
    [(media_id, uploaded)] = graph_api.uploads.items()
    assert uploaded.data == files.pdf() and uploaded.mime_type == "application/pdf"
    assert graph_api.sent[0].json["document"] == {
        "id": media_id,
        "caption": "Segue",
        "filename": "Orçamento março.pdf",
    }


def test_a_photo_on_a_cloud_number_is_sent_as_jpeg_within_metas_limit(
    logged_in: FlaskClient, cloud_chat: Chat, graph_api: GraphEmulator
) -> None:
    attach(logged_in, cloud_chat.conversation_id, files.png(2400, 1800), "screenshot.png")
    [uploaded] = graph_api.uploads.values()
    assert uploaded.mime_type == "image/jpeg" and uploaded.data.startswith(b"\xff\xd8\xff")
    assert graph_api.sent[0].type == "image" and "caption" not in graph_api.sent[0].json["image"]


def test_a_file_whose_name_lies_goes_as_what_it_is(logged_in: FlaskClient, sandbox_chat: Chat) -> None:
    attach(logged_in, sandbox_chat.conversation_id, files.pdf(), "foto.jpg", content_type="image/jpeg")
    [media] = media_rows()
    assert (media.kind, media.mime_type, media.filename) == ("document", "application/pdf", "foto.jpg.pdf")
    assert _outbound()[0].type == "document"


@pytest.mark.parametrize(
    ("data", "name", "reason"),
    [
        (files.svg_with_script(), "logo.svg", "SVG"),
        (files.svg_with_script(), "logo.png", "SVG"),
        (files.exe(), "boleto.pdf", "can&#39;t be sent"),
        (files.png_bomb(), "bomb.png", "too many pixels"),
        (files.truncated_jpeg(), "half.jpg", "truncated"),
        (files.plain_zip(), "fotos.zip", "ZIP"),
    ],
)
def test_refused_files_answer_in_the_composer_and_store_nothing(
    logged_in: FlaskClient, sandbox_chat: Chat, data: bytes, name: str, reason: str
) -> None:
    before = message_count()
    response = attach(logged_in, sandbox_chat.conversation_id, data, name, text="olha")
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert 'class="composer"' in html and reason in html
    assert ">olha</textarea>" in html  # what was typed is kept
    assert message_count() == before and not media_rows()
    assert all("-original" not in key for key, _modified in get_storage().stored_keys())


def test_size_limit_per_kind_at_the_boundary(
    logged_in: FlaskClient, cloud_chat: Chat, graph_api: GraphEmulator, no_ffmpeg: None
) -> None:
    limit = limit_for("cloud", "audio").max_bytes  # 16 MB: MP3 goes as it is without ffmpeg
    at_limit = files.mp3_header().ljust(limit, b"\0")
    assert attach(logged_in, cloud_chat.conversation_id, at_limit, "a.mp3").status_code == 200
    over = at_limit + b"\0"
    response = attach(logged_in, cloud_chat.conversation_id, over, "b.mp3")
    assert response.status_code == 413
    assert "16 MB" in response.get_data(as_text=True)
    assert len(media_rows()) == 1 and len(_outbound()) == 1
    [uploaded] = graph_api.uploads.values()
    assert len(uploaded.data) == limit and uploaded.mime_type == "audio/mpeg"


def test_a_200_mb_upload_is_refused_before_it_is_read(
    app: Flask, logged_in: FlaskClient, sandbox_chat: Chat
) -> None:
    class Body(io.RawIOBase):
        read_bytes = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            Body.read_bytes += len(buffer)
            buffer[:] = b"\0" * len(buffer)
            return len(buffer)

    size = 200 * MB
    response = logged_in.post(
        f"/conversations/{sandbox_chat.conversation_id}/messages",
        headers={"HX-Request": "true", "X-CSRFToken": csrf_from(logged_in, "/")},
        environ_overrides={
            "wsgi.input": io.BufferedReader(Body()),
            "CONTENT_TYPE": "multipart/form-data; boundary=x",
            "CONTENT_LENGTH": str(size),
        },
    )
    assert response.status_code == 413
    assert "too large" in response.get_data(as_text=True)
    assert Body.read_bytes < MB and not media_rows()


def test_a_double_click_sends_one_file(logged_in: FlaskClient, sandbox_chat: Chat) -> None:
    for _ in range(2):
        response = attach(logged_in, sandbox_chat.conversation_id, files.pdf(), "a.pdf", send_key="k-1")
        assert response.status_code == 200
    assert len(_outbound()) == 1 and len(media_rows()) == 1


def test_audio_caption_goes_first_as_its_own_message(
    logged_in: FlaskClient, sandbox_chat: Chat, no_ffmpeg: None
) -> None:
    attach(logged_in, sandbox_chat.conversation_id, files.mp3_header(), "recado.mp3", text="Escuta isso")
    text, audio = _outbound()
    assert (text.type, text.text) == ("text", "Escuta isso")
    assert (audio.type, audio.text, audio.status) == ("audio", "", "delivered")


def test_nothing_is_sent_to_a_lead_who_opted_out(logged_in: FlaskClient, sandbox_chat: Chat) -> None:
    from crm.db import utcnow

    lead = db.session.scalar(select(Lead))
    assert lead is not None
    lead.opted_out_at = utcnow()
    db.session.commit()
    response = attach(logged_in, sandbox_chat.conversation_id, files.pdf(), "a.pdf")
    assert response.status_code == 409 and not media_rows() and not _outbound()


def test_the_composer_shows_the_numbers_limits(
    logged_in: FlaskClient, cloud_chat: Chat, no_ffmpeg: None
) -> None:
    html = logged_in.get(f"/conversations/{cloud_chat.conversation_id}", headers={"HX-Request": "true"})
    text = html.get_data(as_text=True)
    assert re.search(r"images 30 MB, video 16 MB, audio 16 MB, documents 100 MB", text)
    assert f'data-limit-video="{16 * MB}"' in text


def test_a_file_that_cannot_be_prepared_fails_its_message_with_the_reason(
    app: Flask, logged_in: FlaskClient, sandbox_chat: Chat
) -> None:
    from crm.media import outbound, services

    real = outbound.prepare_file

    def broken(*args: object) -> None:
        raise services.MediaRejected("The video has no picture.")

    outbound.prepare_file = broken  # type: ignore[assignment]
    try:
        attach(logged_in, sandbox_chat.conversation_id, files.pdf(), "v.pdf")
    finally:
        outbound.prepare_file = real  # type: ignore[assignment]
    [message] = _outbound()
    assert message.status == "failed" and message.error_title == "The video has no picture."
    media = db.session.get(MediaFile, message.media_file_id)
    assert media is not None and media.status == "failed"


def test_a_crafted_office_file_is_refused_not_a_server_error(
    logged_in: FlaskClient, sandbox_chat: Chat
) -> None:
    data = bytearray(files.docx())
    central = data.index(b"PK\x01\x02")
    data[central + 6 : central + 8] = b"\xff\x00"  # "version needed to extract": one zipfile refuses
    response = attach(logged_in, sandbox_chat.conversation_id, bytes(data), "contrato.docx")
    assert response.status_code == 422 and not media_rows()


def test_a_message_waiting_for_its_file_is_parked_and_released_when_it_is_ready(
    app: Flask, logged_in: FlaskClient, sandbox_chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm.db import utcnow
    from crm.media import outbound
    from crm.media.outbound import prepare_outbound
    from crm.whatsapp import pacing
    from crm.whatsapp.models import Outbox
    from crm.whatsapp.outbox import deliver_outbound

    real = outbound.prepare_file

    def storage_down(*args: object) -> dict[str, object]:
        raise ConnectionError("storage unreachable")

    reserved: list[int] = []
    real_reserve = pacing.reserve
    monkeypatch.setattr(
        pacing, "reserve", lambda account: reserved.append(account.id) or real_reserve(account)
    )
    monkeypatch.setattr(outbound, "prepare_file", storage_down)
    attach(logged_in, sandbox_chat.conversation_id, files.pdf(), "a.pdf")
    [message] = _outbound()
    outbox = db.session.scalar(select(Outbox).where(Outbox.message_id == message.id))
    assert outbox is not None and message.status == "queued" and media_rows()[0].status == "pending"
    assert outbox.next_attempt_at > utcnow()  # parked: no sender keeps picking it up
    outbox.next_attempt_at = utcnow()
    db.session.commit()
    assert deliver_outbound(outbox.id) == "media_pending" and not reserved  # no pacing slot spent
    monkeypatch.setattr(outbound, "prepare_file", real)
    assert prepare_outbound(media_rows()[0].id) == "ready"
    assert _outbound()[0].status == "delivered" and reserved == [sandbox_chat.account_id]


def test_a_message_being_sent_cannot_be_deleted(logged_in: FlaskClient, sandbox_chat: Chat) -> None:
    from crm.whatsapp.models import Outbox

    attach(logged_in, sandbox_chat.conversation_id, files.pdf(), "a.pdf")
    [message] = _outbound()
    outbox = db.session.scalar(select(Outbox).where(Outbox.message_id == message.id))
    assert outbox is not None
    outbox.state = "sending"
    db.session.commit()
    headers = {"HX-Request": "true", "X-CSRFToken": csrf_from(logged_in, "/")}
    assert logged_in.post(f"/messages/{message.id}/delete", headers=headers).status_code == 409
    assert len(_outbound()) == 1 and media_rows()[0].storage_key
