"""Files reach browsers only through here, after the workspace check: another workspace's file
answers 404 like a missing one. Only types that can't carry script are ever shown inline."""

from __future__ import annotations

from typing import Any

from flask import abort, g
from flask_login import login_required

from crm.media import bp
from crm.media.models import MediaFile
from crm.media.storage import get_storage
from crm.tenancy import get_scoped

# No page, script or plugin may run from a served file, even if a browser guessed it was HTML.
FILE_CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox"


def _served(key: str, content_type: str, filename: str | None, inline: bool) -> Any:
    response = get_storage().serve(key, content_type, filename, as_attachment=not inline)
    response.headers["Content-Security-Policy"] = FILE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    if response.status_code == 200 or response.status_code == 206:
        # Kept briefly by the browser only; a redirect to a signed URL keeps its own no-store.
        response.headers["Cache-Control"] = "private, max-age=300"
    return response


def serve_media(workspace_id: int, media_id: int, *, thumbnail: bool = False) -> Any:
    """A file of this workspace, for the inbox (session) and the API (token) alike."""
    media = get_scoped(MediaFile, workspace_id, media_id)
    if thumbnail:
        if not media.thumbnail_key:
            abort(404)
        return _served(media.thumbnail_key, "image/jpeg", None, True)
    if not media.is_ready or not media.storage_key:
        abort(404)
    inline = bool(media.inline_type)
    mime = media.mime_type.split(";")[0].strip().lower()
    # Anything that is not a known-safe inline type is a download; markup is never served as such.
    risky = mime in ("text/html", "image/svg+xml", "text/xml", "application/xml", "application/xhtml+xml")
    content_type = media.mime_type if inline or (mime.startswith("application/") and not risky) else None
    return _served(
        media.storage_key,
        content_type or "application/octet-stream",
        media.filename or f"file-{media.id}",
        inline,
    )


@bp.get("/media/<int:media_id>")
@login_required
def file(media_id: int) -> Any:
    return serve_media(g.workspace_id, media_id)


@bp.get("/media/<int:media_id>/thumbnail")
@login_required
def thumbnail(media_id: int) -> Any:
    return serve_media(g.workspace_id, media_id, thumbnail=True)


@bp.post("/media/<int:media_id>/retry")
@login_required
def retry(media_id: int) -> str:
    """Download a failed file again; answers the message's bubble (now "downloading")."""
    from crm.inbox.bubbles import bubble
    from crm.media.inbound import message_of, request_retry

    media = request_retry(g.workspace_id, media_id)
    return bubble(message_of(media))
