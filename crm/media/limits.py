"""What WhatsApp accepts, per provider and kind of media: the one table the composer shows, the
upload enforces and the processing fits files into.

Cloud API: developers.facebook.com/docs/whatsapp/cloud-api/reference/media#supported-media-types.
WebQR numbers send as the WhatsApp app does, whose limits are larger.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024
KB = 1024

KINDS = ("image", "video", "audio", "document", "sticker")


@dataclass(frozen=True)
class Limit:
    kind: str
    max_bytes: int  # what the provider takes
    mime_types: frozenset[str]  # what the provider takes as it is; other types need converting


IMAGE_TYPES = frozenset({"image/jpeg", "image/png"})
AUDIO_TYPES = frozenset({"audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"})
VIDEO_TYPES = frozenset({"video/mp4", "video/3gpp"})
DOCUMENT_TYPES = frozenset(
    {
        "text/plain",
        "application/pdf",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    }
)
STICKER_TYPES = frozenset({"image/webp"})

_CLOUD = {
    "image": Limit("image", 5 * MB, IMAGE_TYPES),
    "audio": Limit("audio", 16 * MB, AUDIO_TYPES),
    "video": Limit("video", 16 * MB, VIDEO_TYPES),
    "document": Limit("document", 100 * MB, DOCUMENT_TYPES),
    "sticker": Limit("sticker", 100 * KB, STICKER_TYPES),  # 500 KB when animated
}
_WEBQR = {
    "image": Limit("image", 16 * MB, IMAGE_TYPES),
    "audio": Limit("audio", 100 * MB, AUDIO_TYPES),
    "video": Limit("video", 100 * MB, VIDEO_TYPES),
    "document": Limit("document", 100 * MB, DOCUMENT_TYPES),
    "sticker": Limit("sticker", 1 * MB, STICKER_TYPES),
}
ANIMATED_STICKER_BYTES = 500 * KB

# The sandbox behaves like the strictest real provider, so what works there works everywhere.
LIMITS: dict[str, dict[str, Limit]] = {"cloud": _CLOUD, "webqr": _WEBQR, "sandbox": _CLOUD}

# Photos are compressed to fit, so a larger original is taken for them: up to this.
IMAGE_UPLOAD_MAX = 30 * MB
# Audio and video that get converted (ffmpeg) may start larger than the provider's limit.
CONVERTIBLE_UPLOAD_MAX = 100 * MB


# The largest file any number takes (documents); a request may be this plus its form fields.
LARGEST_UPLOAD = 100 * MB


def limit_for(provider: str, kind: str) -> Limit:
    table = LIMITS.get(provider, _CLOUD)
    return table.get(kind, table["document"])


def upload_max(provider: str, kind: str, *, convertible: bool = False) -> int:
    """The largest original taken for ``kind`` on ``provider``: photos are compressed to fit, and
    with ``convertible`` (ffmpeg on the server) audio and video are converted to fit."""
    limit = limit_for(provider, kind).max_bytes
    if kind == "image":
        return max(limit, IMAGE_UPLOAD_MAX)
    if convertible and kind in ("audio", "video"):
        return max(limit, CONVERTIBLE_UPLOAD_MAX)
    return limit


def request_cap(provider: str) -> int:
    """The largest upload request a number can take at all: checked against Content-Length (and
    while reading) before anything is buffered."""
    return max(upload_max(provider, kind, convertible=True) for kind in KINDS) + 256 * KB


def human_size(size: int) -> str:
    if size >= MB:
        return f"{size / MB:.0f} MB" if size % MB == 0 else f"{size / MB:.1f} MB"
    return f"{max(1, round(size / KB))} KB"
