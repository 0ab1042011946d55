"""S3-compatible storage, tested against moto in server mode (a real S3 HTTP endpoint on a local
port, reached by the same boto3 code production uses)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from crm.media.storage import S3Storage, build_storage
from tests.media import files
from tests.media.conftest import Chat, attach, media_rows

BUCKET = "zapdesk-media"
CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}  # moto accepts any


@pytest.fixture
def s3(app: Flask, s3_endpoint: str) -> Iterator[S3Storage]:
    """The app's media storage pointed at a fresh bucket for one test."""
    saved = {key: app.config[key] for key in ("MEDIA_STORAGE", "S3_BUCKET", "S3_ENDPOINT_URL", "S3_REGION")}
    saved_keys = (app.config.get("S3_ACCESS_KEY_ID"), app.config.get("S3_SECRET_ACCESS_KEY"))
    app.config.update(
        MEDIA_STORAGE="s3", S3_BUCKET=BUCKET, S3_ENDPOINT_URL=s3_endpoint, S3_REGION="us-east-1",
        S3_ACCESS_KEY_ID="test", S3_SECRET_ACCESS_KEY="test",
    )  # fmt: skip
    storage = build_storage(app)
    assert isinstance(storage, S3Storage)
    storage.client.create_bucket(Bucket=BUCKET)
    previous = app.extensions.get("media_storage")
    app.extensions["media_storage"] = storage
    app.extensions.pop("media_origin", None)
    yield storage
    for key, _modified in list(storage.stored_keys()):
        storage.delete(key)
    storage.client.delete_bucket(Bucket=BUCKET)
    app.extensions["media_storage"] = previous
    app.extensions.pop("media_origin", None)
    app.config.update(saved, S3_ACCESS_KEY_ID=saved_keys[0], S3_SECRET_ACCESS_KEY=saved_keys[1])


def test_round_trip(s3: S3Storage, tmp_path: Path) -> None:
    s3.save("w1/2026/12/a.pdf", io.BytesIO(files.pdf()), "application/pdf")
    assert s3.exists("w1/2026/12/a.pdf") and not s3.exists("w1/2026/12/b.pdf")
    s3.fetch("w1/2026/12/a.pdf", tmp_path / "a.pdf")
    assert (tmp_path / "a.pdf").read_bytes() == files.pdf()
    assert [key for key, _ in s3.stored_keys()] == ["w1/2026/12/a.pdf"]
    head = s3.client.head_object(Bucket=BUCKET, Key="w1/2026/12/a.pdf")
    assert head["ContentType"] == "application/pdf"
    s3.delete("w1/2026/12/a.pdf")
    s3.delete("w1/2026/12/a.pdf")  # a missing file is not an error
    assert not list(s3.stored_keys())


def test_an_attachment_is_stored_in_the_bucket_and_served_by_a_short_lived_url(
    logged_in: FlaskClient, sandbox_chat: Chat, s3: S3Storage
) -> None:
    assert attach(logged_in, sandbox_chat.conversation_id, files.pdf(), "contrato.pdf").status_code == 200
    [media] = media_rows()
    assert media.status == "ready" and [key for key, _ in s3.stored_keys()] == [media.storage_key]
    response = logged_in.get(f"/media/{media.id}")
    assert response.status_code == 302
    url = response.headers["Location"]
    assert "X-Amz-Expires=300" in url and "X-Amz-Signature=" in url
    page_csp = logged_in.get("/").headers["Content-Security-Policy"]
    origin = url.split("/zapdesk-media/")[0]
    assert f"img-src 'self' data: blob: {origin}" not in page_csp  # (order below)
    assert f"img-src 'self' {origin}" in page_csp and f"media-src 'self' {origin}" in page_csp
    served = httpx.get(url)
    assert served.status_code == 200 and served.content == files.pdf()
    assert served.headers["content-type"] == "application/pdf"
    assert served.headers["content-disposition"].startswith('attachment; filename="contrato.pdf"')


def test_a_photo_is_prepared_from_the_bucket(
    logged_in: FlaskClient, sandbox_chat: Chat, s3: S3Storage
) -> None:
    attach(logged_in, sandbox_chat.conversation_id, files.jpeg(2400, 1800), "foto.jpg")
    [media] = media_rows()
    keys = sorted(key for key, _ in s3.stored_keys())
    assert media.status == "ready" and keys == sorted(
        [media.storage_key, media.thumbnail_key]
    )  # original gone
