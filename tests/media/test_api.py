"""Files through the REST API: a reply with a file (multipart), the messages list names each
message's file, and the file is fetched with the token."""

from __future__ import annotations

import io

from flask.testing import FlaskClient

from tests import factories
from tests.media import files
from tests.media.conftest import Chat, fetch


def test_a_file_sent_and_read_back_through_the_api(
    client: FlaskClient, owner: factories.Person, sandbox_chat: Chat
) -> None:
    headers = {"Authorization": f"Bearer {factories.api_token(owner)}"}
    url = f"/api/v1/conversations/{sandbox_chat.conversation_id}/messages"
    form = {
        "file": (io.BytesIO(files.pdf()), "proposta.pdf"),
        "text": "Segue a proposta",
        "idempotency_key": "p-1",
    }
    response = client.post(url, data=form, headers=headers, content_type="multipart/form-data")
    assert response.status_code == 202 and response.json is not None and response.json["status"] == "queued"
    listed = client.get(url, headers=headers).json
    assert listed is not None
    sent = listed["data"][0]
    assert (sent["type"], sent["text"], sent["status"]) == ("document", "Segue a proposta", "delivered")
    media = sent["media"]
    assert media["filename"] == "proposta.pdf" and media["mime_type"] == "application/pdf"
    assert media["status"] == "ready" and media["url"] == f"/api/v1/media/{media['id']}"
    assert listed["data"][1]["media"] is None  # the customer's text has none
    downloaded = fetch(client, media["url"], headers=headers)
    assert downloaded.status_code == 200 and downloaded.data == files.pdf()


def test_api_mistakes_are_clear_json(
    client: FlaskClient, owner: factories.Person, sandbox_chat: Chat
) -> None:
    headers = {"Authorization": f"Bearer {factories.api_token(owner)}"}
    url = f"/api/v1/conversations/{sandbox_chat.conversation_id}/messages"
    no_file = client.post(url, data={"text": "x"}, headers=headers, content_type="multipart/form-data")
    assert no_file.status_code == 422 and no_file.json is not None
    assert no_file.json["error"]["code"] == "invalid_file"
    svg = {"file": (io.BytesIO(files.svg_with_script()), "logo.svg")}
    refused = client.post(url, data=svg, headers=headers, content_type="multipart/form-data")
    assert refused.status_code == 422 and refused.json is not None
    assert refused.json["error"]["code"] == "invalid_media" and "SVG" in refused.json["error"]["message"]
