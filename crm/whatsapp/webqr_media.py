"""Files over WhatsApp Web (neonize): our prepared file uploaded and wrapped in the right waE2E
message, and a customer's file downloaded (and decrypted) from the media message kept with it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from flask_babel import gettext as _

from crm.crypto import decrypt_json
from crm.media.services import Job
from crm.media.sniff import MediaRejected
from crm.whatsapp.providers.base import ErrorAction, OutboundRequest, ProviderError

_MESSAGE_FIELDS = {
    "image": ("imageMessage", "ImageMessage", "MediaImage"),
    "sticker": ("stickerMessage", "StickerMessage", "MediaImage"),
    "video": ("videoMessage", "VideoMessage", "MediaVideo"),
    "audio": ("audioMessage", "AudioMessage", "MediaAudio"),
    "document": ("documentMessage", "DocumentMessage", "MediaDocument"),
}


def media_message(neonize: Any, client: Any, request: OutboundRequest) -> Any:
    """Upload the file (whatsmeow encrypts it) and build the message that carries it."""
    media = request.media
    assert media is not None
    field, class_name, media_type = _MESSAGE_FIELDS.get(media.kind, _MESSAGE_FIELDS["document"])
    e2e = neonize.proto.waE2E.WAWebProtobufsE2E_pb2
    data = media.load()
    try:
        upload = client.upload(data, getattr(neonize.utils.enum.MediaType, media_type))
    except neonize.exc.UploadError as exc:
        raise ProviderError(
            "upload_failed", str(exc)[:300], action=ErrorAction.RETRY, retry_after=30
        ) from exc
    fields: dict[str, Any] = {
        "URL": upload.url,
        "directPath": upload.DirectPath,
        "mediaKey": upload.MediaKey,
        "fileEncSHA256": upload.FileEncSHA256,
        "fileSHA256": upload.FileSHA256,
        "fileLength": upload.FileLength,
        "mimetype": media.mime_type,
    }
    if media.kind in ("image", "video", "document") and request.text:
        fields["caption"] = request.text
    if media.kind in ("image", "video") and media.width and media.height:
        fields["width"], fields["height"] = media.width, media.height
    if media.kind == "audio":
        fields["PTT"] = media.voice
    if media.kind == "document":
        fields["fileName"] = media.filename or "file"
        fields["title"] = media.filename or "file"
    return e2e.Message(**{field: getattr(e2e, class_name)(**fields)})


def download(neonize: Any, client: Any, media: Job, dest: Path, limit: int) -> str:
    """Download a customer's file into ``dest``; its MIME type as the message stated it. A file
    over ``limit`` is refused from its stated length, before anything is downloaded."""
    wire = decrypt_json(media.source_encrypted).get("wire") if media.source_encrypted else None
    if not isinstance(wire, str):
        raise MediaRejected(_("WhatsApp gave no keys for this file."), code="media_unavailable")
    e2e = neonize.proto.waE2E.WAWebProtobufsE2E_pb2
    message = e2e.Message.FromString(base64.b64decode(wire))
    stated = next(
        (
            getattr(message, field).fileLength
            for field, *_ in _MESSAGE_FIELDS.values()
            if message.HasField(field)
        ),
        0,
    )
    if stated > limit:
        raise ProviderError("too_large", "The media is larger than allowed", action=ErrorAction.FAIL)
    try:
        data = client.download_any(message)
    except neonize.exc.DownloadError as exc:
        raise ProviderError("download_failed", str(exc)[:300], action=ErrorAction.RETRY) from exc
    if not data:
        raise ProviderError("download_failed", "WhatsApp returned no file", action=ErrorAction.RETRY)
    if len(data) > limit:
        raise ProviderError("too_large", "The media is larger than allowed", action=ErrorAction.FAIL)
    dest.write_bytes(data)
    return media.mime_type
