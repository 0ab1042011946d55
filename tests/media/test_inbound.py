"""Customers' files: downloaded by a task (Cloud API: GET /<media_id>, then its URL with the
token), stored, shown in the thread; a failed download can be tried again from the thread."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import select

from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Message
from crm.media.models import MediaFile
from crm.media.tasks import download_media_task
from crm.whatsapp.models import WhatsAppAccount
from tests import factories
from tests.conftest import csrf_from
from tests.fakes.graph_api import GraphEmulator
from tests.media import files
from tests.media.conftest import fetch, media_rows, stored_bytes
from tests.whatsapp.conftest import make_cloud_account, post_webhook


@contextmanager
def meta_unreachable(account: WhatsAppAccount) -> Iterator[None]:
    """Meta can't be reached from this number for a while (a closed local port)."""
    settings = dict(account.settings or {})
    account.settings = {**settings, "graph_url": "http://127.0.0.1:9/v23.0"}
    db.session.commit()
    try:
        yield
    finally:
        account.settings = settings
        db.session.commit()


def _customer_sends(client: FlaskClient, account: WhatsAppAccount, graph: GraphEmulator, media_id: str,
                    kind: str = "image", caption: str | None = None) -> Message:  # fmt: skip
    payload = graph.message_payload(media_id=media_id, media_type=kind, caption=caption)
    assert post_webhook(client, account, payload).status_code == 200
    db.session.expire_all()
    message = db.session.scalar(select(Message).where(Message.direction == "in"))
    assert message is not None
    return message


def test_a_customers_photo_is_downloaded_stored_and_shown(
    app: Flask, logged_in: FlaskClient, owner: factories.Person, graph_api: GraphEmulator
) -> None:
    account = make_cloud_account(owner, graph_api)
    photo = files.jpeg(1200, 900, gps=True)
    media_id = graph_api.add_media(photo, "image/jpeg")
    message = _customer_sends(logged_in, account, graph_api, media_id, caption="Chegou assim")
    [media] = media_rows()
    assert message.media_file_id == media.id and message.text == "Chegou assim"
    assert (media.status, media.kind, media.mime_type, media.provider_media_id) == (
        "ready", "image", "image/jpeg", media_id)  # fmt: skip
    assert stored_bytes(app, media.storage_key) == photo  # the customer's file, kept as sent
    thumb = Image.open(io.BytesIO(stored_bytes(app, media.thumbnail_key)))
    assert max(thumb.size) == 320
    # Meta was asked for the file's URL, then the URL was fetched with the bearer token.
    downloads = [r for r in graph_api.requests if r.path.startswith("/media-download/")]
    assert len(downloads) == 1 and downloads[0].header("Authorization") == "Bearer test-token"
    html = logged_in.get(f"/conversations/{message.conversation_id}", headers={"HX-Request": "true"})
    shown = html.get_data(as_text=True)
    assert f'src="/media/{media.id}/thumbnail"' in shown
    assert 'width="320" height="240"' in shown  # its place kept before it loads: the thread doesn't jump


def test_a_repeated_webhook_downloads_once(
    logged_in: FlaskClient, owner: factories.Person, graph_api: GraphEmulator
) -> None:
    account = make_cloud_account(owner, graph_api)
    media_id = graph_api.add_media(files.pdf(), "application/pdf", "nota.pdf")
    payload = graph_api.message_payload(media_id=media_id, media_type="document")
    for _ in range(3):
        assert post_webhook(logged_in, account, payload).status_code == 200
    [media] = media_rows()
    assert media.filename == "nota.pdf" and media.status == "ready"
    assert len([r for r in graph_api.requests if r.path.startswith("/media-download/")]) == 1


def test_a_transient_failure_is_retried_by_the_worker(
    logged_in: FlaskClient, owner: factories.Person, graph_api: GraphEmulator
) -> None:
    account = make_cloud_account(owner, graph_api)
    media_id = graph_api.add_media(files.jpeg(), "image/jpeg")
    with meta_unreachable(account):
        post_webhook(logged_in, account, graph_api.message_payload(media_id=media_id))
    [media] = media_rows()
    assert media.status == "pending" and media.attempts == 1  # the message is stored all the same
    download_media_task.call_local(media.id)
    assert media_rows()[0].status == "ready"


def test_a_failed_download_shows_why_and_can_be_tried_again(
    logged_in: FlaskClient, owner: factories.Person, graph_api: GraphEmulator
) -> None:
    account = make_cloud_account(owner, graph_api)
    message = _customer_sends(logged_in, account, graph_api, "404404404404404")  # Meta doesn't know it
    [media] = media_rows()
    assert media.status == "failed" and media.error_code == "100"
    html = logged_in.get(f"/conversations/{message.conversation_id}", headers={"HX-Request": "true"})
    assert f'hx-post="/media/{media.id}/retry"' in html.get_data(as_text=True)
    # Meta has it now (say it was a hiccup on their side): "Try again" downloads it.
    graph_api.uploads[media.provider_media_id or ""] = graph_api.uploads[
        graph_api.add_media(files.jpeg(), "image/jpeg")
    ]
    headers = {"HX-Request": "true", "X-CSRFToken": csrf_from(logged_in, "/")}
    response = logged_in.post(f"/media/{media.id}/retry", headers=headers)
    assert response.status_code == 200 and f'id="message-{message.id}"' in response.get_data(as_text=True)
    assert media_rows()[0].status == "ready"
    again = logged_in.post(f"/media/{media.id}/retry", headers=headers)
    assert again.status_code == 409  # only a failed download can be retried


def test_files_older_than_metas_seven_days_are_not_fetched(
    logged_in: FlaskClient, owner: factories.Person, graph_api: GraphEmulator
) -> None:
    account = make_cloud_account(owner, graph_api)
    with meta_unreachable(account):
        _customer_sends(logged_in, account, graph_api, graph_api.add_media(files.jpeg(), "image/jpeg"))
    media = media_rows()[0]
    media.created_at = utcnow() - timedelta(days=8)
    db.session.commit()
    assert download_media_task.call_local(media.id) == "failed"
    assert media_rows()[0].error_code == "media_expired"


def test_a_file_whose_content_is_not_what_meta_says_is_kept_as_a_download(
    app: Flask, logged_in: FlaskClient, owner: factories.Person, graph_api: GraphEmulator
) -> None:
    account = make_cloud_account(owner, graph_api)
    media_id = graph_api.add_media(files.html_page(), "image/jpeg", "foto.jpg")
    _customer_sends(logged_in, account, graph_api, media_id)
    [media] = media_rows()
    assert media.status == "ready" and media.mime_type == "application/octet-stream"
    assert media.inline_type == "" and media.thumbnail_key is None
    response = fetch(logged_in, f"/media/{media.id}")
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith("attachment")


def test_the_simulator_customer_sends_a_file(logged_in: FlaskClient, owner: factories.Person) -> None:
    account_id = factories.sandbox_account(owner)
    token = csrf_from(logged_in, f"/settings/numbers/{account_id}/simulator")
    response = logged_in.post(
        f"/settings/numbers/{account_id}/simulator",
        data={
            "csrf_token": token,
            "phone": "+55 11 98888-7777",
            "name": "Ana",
            "text": "",
            "file": (io.BytesIO(files.pdf()), "boleto.pdf"),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    [media] = media_rows()
    assert (media.status, media.kind, media.filename, media.direction) == (
        "ready",
        "document",
        "boleto.pdf",
        "in",
    )
    bad = logged_in.post(
        f"/settings/numbers/{account_id}/simulator",
        data={
            "csrf_token": token,
            "phone": "+5511988887777",
            "text": "",
            "file": (io.BytesIO(files.svg_with_script()), "x.svg"),
        },
        content_type="multipart/form-data",
    )
    assert bad.status_code == 422 and "SVG" in bad.get_data(as_text=True)
    assert len(media_rows()) == 1


def test_reconciler_hands_lost_jobs_back(
    logged_in: FlaskClient, owner: factories.Person, graph_api: GraphEmulator
) -> None:
    from crm.media.cleanup import reconcile_media

    account = make_cloud_account(owner, graph_api)
    with meta_unreachable(account):
        _customer_sends(logged_in, account, graph_api, graph_api.add_media(files.jpeg(), "image/jpeg"))
    media = db.session.get(MediaFile, media_rows()[0].id)
    assert media is not None
    media.updated_at = utcnow() - timedelta(minutes=5)  # its retry job was lost with Redis
    db.session.commit()
    assert reconcile_media() == {"prepare": 0, "download": 1}
    assert media_rows()[0].status == "ready"


def test_a_customers_svg_is_only_ever_a_download(
    logged_in: FlaskClient, owner: factories.Person, graph_api: GraphEmulator
) -> None:
    account = make_cloud_account(owner, graph_api)
    media_id = graph_api.add_media(files.svg_with_script(), "image/svg+xml", "logo.svg")
    message = _customer_sends(logged_in, account, graph_api, media_id, kind="document")
    [media] = media_rows()
    assert media.status == "ready" and media.inline_type == ""
    response = fetch(logged_in, f"/media/{media.id}")
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert "sandbox" in response.headers["Content-Security-Policy"]
    html = logged_in.get(f"/conversations/{message.conversation_id}", headers={"HX-Request": "true"})
    thread = html.get_data(as_text=True)
    assert f'<a class="document" href="/media/{media.id}" download>' in thread
    assert "<img" not in thread.split(f'id="media-{media.id}"')[1].split("</div>")[0]
