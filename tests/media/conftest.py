"""Fixtures for media: a conversation on each kind of number, attaching files as the composer
does, and switching ffmpeg off (or requiring it)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from crm.extensions import db
from crm.inbox.models import Message
from crm.media import av
from crm.media.models import MediaFile
from tests import factories
from tests.conftest import csrf_from
from tests.services import require_service
from tests.whatsapp.conftest import graph, graph_api, make_cloud_account  # noqa: F401  (fixtures)


@pytest.fixture(autouse=True)
def _own_media_folder(media_folder: Any) -> Any:
    """Every media test stores its files in a folder of its own (tests/conftest.py)."""
    return media_folder


@dataclass
class Chat:
    account_id: int
    conversation_id: int


@pytest.fixture
def sandbox_chat(owner: factories.Person) -> Chat:
    account_id = factories.sandbox_account(owner)
    return Chat(account_id, factories.inbound(account_id, phone="+5511988887777", text="Oi"))


@pytest.fixture
def cloud_chat(owner: factories.Person, graph_api: Any) -> Chat:  # noqa: F811
    account = make_cloud_account(owner, graph_api)
    return Chat(account.id, factories.inbound(account.id, phone="+5511988887777", text="Oi"))


def attach(
    client: FlaskClient,
    conversation_id: int,
    data: bytes,
    filename: str,
    text: str = "",
    send_key: str | None = None,
    content_type: str = "application/octet-stream",
) -> Any:
    """The composer's request: multipart, over HTMX, with the page's CSRF header. The body is
    encoded in memory (the test client would spool a large one to a file it never closes)."""
    import io

    from werkzeug.datastructures import FileStorage
    from werkzeug.test import encode_multipart

    form: dict[str, Any] = {
        "text": text,
        "file": FileStorage(io.BytesIO(data), filename=filename, content_type=content_type),
    }
    if send_key:
        form["send_key"] = send_key
    boundary, body = encode_multipart(form)
    headers = {"HX-Request": "true", "X-CSRFToken": csrf_from(client, "/")}
    return client.post(
        f"/conversations/{conversation_id}/messages",
        data=body,
        headers=headers,
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def fetch(client: FlaskClient, url: str, **kwargs: Any) -> Any:
    """GET a served file, read whole and closed (a streamed file response holds its handle)."""
    response = client.get(url, **kwargs)
    response.get_data()
    response.close()
    return response


def media_rows() -> list[MediaFile]:
    db.session.expire_all()
    return list(db.session.scalars(select(MediaFile).order_by(MediaFile.id)))


def message_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Message)) or 0


def stored_bytes(app: Flask, key: str | None) -> bytes:
    from crm.media.storage import get_storage

    assert key
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f"
        get_storage().fetch(key, path)
        return path.read_bytes()


@pytest.fixture
def no_ffmpeg(app: Flask) -> Iterator[None]:
    """A server without ffmpeg."""
    saved = app.config["FFMPEG_BINARY"]
    app.config["FFMPEG_BINARY"] = "/nonexistent/ffmpeg"
    assert not av.available()
    yield
    app.config["FFMPEG_BINARY"] = saved


@pytest.fixture
def ffmpeg(app: Flask) -> str:
    binary = shutil.which("ffmpeg")
    if binary is None or shutil.which("ffprobe") is None:
        require_service("ffmpeg is not installed (apt-get install ffmpeg): conversions are not checked")
    assert binary is not None
    return binary
