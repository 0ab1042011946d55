"""Audio and video: converted with ffmpeg when the server has it (voice notes, MP4/H.264), passed
through when WhatsApp takes them as they are, refused with a clear reason otherwise."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from crm.extensions import db
from crm.inbox.models import Message
from crm.media import av
from tests.media import files
from tests.media.conftest import Chat, attach, media_rows, stored_bytes


def _probe(app: Flask, key: str | None, tmp_path: Path) -> av.Probe:
    path = tmp_path / "sent"
    path.write_bytes(stored_bytes(app, key))
    return av.probe(path)


def test_recorded_audio_becomes_a_voice_note(
    app: Flask, logged_in: FlaskClient, sandbox_chat: Chat, ffmpeg: str, tmp_path: Path
) -> None:
    for data, name in (
        (files.wav(1.0), "gravacao.wav"),
        (files.encoded("webm-audio", tmp_path), "nota.webm"),
    ):
        assert attach(logged_in, sandbox_chat.conversation_id, data, name).status_code == 200
    for media in media_rows():
        assert (media.status, media.kind, media.mime_type, media.voice) == (
            "ready",
            "audio",
            "audio/ogg",
            True,
        )
        found = _probe(app, media.storage_key, tmp_path)
        assert found.audio_codec == "opus" and found.video_codec is None
    assert [m.status for m in db.session.scalars(select(Message).where(Message.direction == "out"))] == [
        "delivered",
        "delivered",
    ]


def test_video_becomes_mp4_h264_and_a_good_mp4_passes_as_it_is(
    app: Flask, logged_in: FlaskClient, sandbox_chat: Chat, ffmpeg: str, tmp_path: Path
) -> None:
    good = files.encoded("mp4", tmp_path)
    attach(logged_in, sandbox_chat.conversation_id, files.encoded("webm", tmp_path), "clip.webm")
    attach(logged_in, sandbox_chat.conversation_id, files.encoded("mov", tmp_path), "IMG_1234.MOV")
    attach(logged_in, sandbox_chat.conversation_id, good, "pronto.mp4")
    webm, mov, mp4 = media_rows()
    for converted in (webm, mov):
        assert (converted.status, converted.mime_type) == ("ready", "video/mp4")
        found = _probe(app, converted.storage_key, tmp_path)
        assert "mp4" in found.container and found.video_codec == "h264"
    assert _probe(app, webm.storage_key, tmp_path).audio_codec == "aac"
    assert mp4.status == "ready" and stored_bytes(app, mp4.storage_key) == good


def test_without_ffmpeg_formats_that_need_it_are_refused_clearly(
    logged_in: FlaskClient, sandbox_chat: Chat, no_ffmpeg: None
) -> None:
    response = attach(logged_in, sandbox_chat.conversation_id, files.wav(), "gravacao.wav")
    assert response.status_code == 422
    assert "no ffmpeg" in response.get_data(as_text=True)
    assert not media_rows()
    # What WhatsApp takes as it is still goes.
    assert attach(logged_in, sandbox_chat.conversation_id, files.mp3_header(), "a.mp3").status_code == 200
    assert attach(logged_in, sandbox_chat.conversation_id, files.mp4_header(), "v.mp4").status_code == 200
    assert [(m.kind, m.status, m.voice) for m in media_rows()] == [
        ("audio", "ready", False),
        ("video", "ready", False),
    ]


def test_a_broken_video_is_refused_at_once(logged_in: FlaskClient, sandbox_chat: Chat, ffmpeg: str) -> None:
    response = attach(logged_in, sandbox_chat.conversation_id, files.mp4_header(), "quebrado.mp4")
    assert response.status_code == 422 and "damaged" in response.get_data(as_text=True)
    assert not media_rows()
