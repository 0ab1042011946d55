"""Files are served only through the app, after the workspace check, with the right headers."""

from __future__ import annotations

from flask.testing import FlaskClient

from crm.extensions import db
from crm.inbox.models import Message
from tests import factories
from tests.media import files
from tests.media.conftest import fetch


def _file(owner: factories.Person, data: bytes, name: str) -> int:
    message = db.session.get(Message, factories.inbound_file(factories.sandbox_account(owner), data, name))
    assert message is not None and message.media_file_id is not None
    return message.media_file_id


def test_images_are_shown_inline_with_safe_headers(logged_in: FlaskClient, owner: factories.Person) -> None:
    media_id = _file(owner, files.png(), "foto.png")
    response = fetch(logged_in, f"/media/{media_id}")
    assert response.status_code == 200 and response.data == files.png()
    assert response.headers["Content-Type"] == "image/png"
    assert "attachment" not in response.headers.get("Content-Disposition", "")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.headers["Content-Security-Policy"]
    thumb = fetch(logged_in, f"/media/{media_id}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg"


def test_documents_are_downloads_with_their_name(logged_in: FlaskClient, owner: factories.Person) -> None:
    media_id = _file(owner, files.pdf(), "Nota fiscal março.pdf")
    response = fetch(logged_in, f"/media/{media_id}")
    assert response.headers["Content-Type"] == "application/pdf"
    disposition = response.headers["Content-Disposition"]
    assert (
        disposition.startswith("attachment")
        and "filename*=UTF-8''Nota%20fiscal%20mar%C3%A7o.pdf" in disposition
    )
    assert fetch(logged_in, f"/media/{media_id}/thumbnail").status_code == 404  # no thumbnail for a PDF


def test_audio_and_video_can_be_sought(logged_in: FlaskClient, owner: factories.Person) -> None:
    media_id = _file(owner, files.wav(1.0), "recado.wav")
    response = fetch(logged_in, f"/media/{media_id}", headers={"Range": "bytes=0-99"})
    assert response.status_code == 206 and len(response.data) == 100
    assert response.headers["Content-Type"] == "audio/wav"


def test_not_signed_in_means_no_file(client: FlaskClient, owner: factories.Person) -> None:
    media_id = _file(owner, files.png(), "foto.png")
    response = fetch(client, f"/media/{media_id}")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_another_workspaces_file_is_404(logged_in: FlaskClient) -> None:
    other = factories.person("Outra", "dono@outra.example", role="owner")
    media_id = factories.media_file(other)
    for path in (f"/media/{media_id}", f"/media/{media_id}/thumbnail", f"/media/{media_id + 1000}"):
        assert fetch(logged_in, path).status_code == 404
