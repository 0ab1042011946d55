"""The real type of a file, from its content (magic bytes), never from its name or the browser.

Only what WhatsApp can carry comes out of here, either as it is or after converting it (GIF,
WebP, BMP and TIFF to JPEG/PNG; WAV, FLAC, Vorbis and WebM audio to a voice note; QuickTime,
WebM and MKV video to MP4). Anything else, SVG and HTML above all, is refused with a reason.
"""

from __future__ import annotations

import mmap
import zipfile
from dataclasses import dataclass
from pathlib import Path

from flask_babel import gettext as _

from crm.errors import ValidationFailed


class MediaRejected(ValidationFailed):
    code = "invalid_media"


@dataclass(frozen=True)
class Detected:
    kind: str  # image | audio | video | document | sticker
    mime: str
    ext: str
    convert: bool = False  # WhatsApp takes it only after converting


_HEAD = 8192

_FTYP_AUDIO = {b"M4A ", b"M4B ", b"M4P "}
_FTYP_3GP = (b"3gp", b"3g2")
_FTYP_HEIF = {b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}

_OOXML = {
    "word/": ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
    "xl/": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
    "ppt/": ("application/vnd.openxmlformats-officedocument.presentationml.presentation", "pptx"),
}
_OLE_STREAMS = (
    ("WordDocument", "application/msword", "doc"),
    ("Workbook", "application/vnd.ms-excel", "xls"),
    ("Book", "application/vnd.ms-excel", "xls"),
    ("PowerPoint Document", "application/vnd.ms-powerpoint", "ppt"),
)
_MARKUP = (b"<svg", b"<!doctype html", b"<html", b"<script", b"<?xml", b"<!doctype svg", b"<body", b"<iframe")


def sniff(path: Path) -> Detected:
    """What ``path`` really is, or MediaRejected saying why it can't be sent on WhatsApp."""
    with path.open("rb") as fh:
        head = fh.read(_HEAD)
    if not head:
        raise MediaRejected(_("The file is empty."))
    found = _binary(head, path)
    if found is not None:
        return found
    return _text(head)


def _binary(head: bytes, path: Path) -> Detected | None:
    if head.startswith(b"\xff\xd8\xff"):
        return Detected("image", "image/jpeg", "jpg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Detected("image", "image/png", "png")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Detected("image", "image/gif", "gif", convert=True)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Detected("image", "image/webp", "webp", convert=True)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return Detected("audio", "audio/wav", "wav", convert=True)
    if head[:2] == b"BM" and len(head) > 26 and head[6:10] == b"\0\0\0\0":
        return Detected("image", "image/bmp", "bmp", convert=True)
    if head[:4] in (b"II*\0", b"MM\0*"):
        return Detected("image", "image/tiff", "tif", convert=True)
    if head[4:8] == b"ftyp":
        return _iso_media(head[8:12])
    if head.startswith(b"OggS"):
        if b"OpusHead" in head[:200]:
            return Detected("audio", "audio/ogg", "ogg")
        return Detected("audio", "audio/ogg; codecs=vorbis", "ogg", convert=True)
    if head.startswith(b"#!AMR\n"):
        return Detected("audio", "audio/amr", "amr")
    if head.startswith(b"#!AMR-WB\n"):
        return Detected("audio", "audio/amr-wb", "awb", convert=True)
    if head.startswith(b"fLaC"):
        return Detected("audio", "audio/flac", "flac", convert=True)
    if head.startswith(b"ID3"):
        return Detected("audio", "audio/mpeg", "mp3")
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        if head[1] & 0xF6 == 0xF0:  # MPEG-4 ADTS: layer bits 00
            return Detected("audio", "audio/aac", "aac")
        if head[1] & 0x06:  # MPEG audio layer I-III
            return Detected("audio", "audio/mpeg", "mp3")
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: WebM or Matroska
        return Detected("video", "video/webm" if b"webm" in head[:64] else "video/x-matroska", "webm", True)
    if head.startswith(b"%PDF-"):
        return Detected("document", "application/pdf", "pdf")
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return _ole(path)
    if head.startswith(b"PK\x03\x04"):
        return _zip(path)
    return None


def _iso_media(brand: bytes) -> Detected:
    if brand in _FTYP_HEIF:
        raise MediaRejected(
            _("HEIC/AVIF photos can't be sent on WhatsApp. Export the photo as JPEG and attach it again.")
        )
    if brand in _FTYP_AUDIO:
        return Detected("audio", "audio/mp4", "m4a")
    if brand.startswith(_FTYP_3GP):
        return Detected("video", "video/3gpp", "3gp")
    if brand == b"qt  ":
        return Detected("video", "video/quicktime", "mov", convert=True)
    return Detected("video", "video/mp4", "mp4")


def _ole(path: Path) -> Detected:
    """A legacy Office file: which one, from the names of the streams inside."""
    try:
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for stream, mime, ext in _OLE_STREAMS:
                if data.find(stream.encode("utf-16-le")) >= 0:
                    return Detected("document", mime, ext)
    except (OSError, ValueError):
        raise MediaRejected(_("The file is damaged and can't be read.")) from None
    raise MediaRejected(_("This Office file type can't be sent on WhatsApp."))


def _zip(path: Path) -> Detected:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except Exception:  # damaged, or crafted (zipfile raises NotImplementedError, ValueError...)
        raise MediaRejected(
            _("The file is damaged: it looks like a ZIP archive but can't be read.")
        ) from None
    if "[Content_Types].xml" in names:
        for prefix, (mime, ext) in _OOXML.items():
            if any(name.startswith(prefix) for name in names):
                return Detected("document", mime, ext)
    raise MediaRejected(
        _("ZIP archives can't be sent on WhatsApp Business. Send PDF, Office or text documents instead.")
    )


def _text(head: bytes) -> Detected:
    if b"\0" in head:
        raise MediaRejected(
            _(
                "This file type can't be sent on WhatsApp. Send images (JPEG, PNG), video (MP4), audio "
                "(MP3, M4A, AAC, OGG, AMR) or documents (PDF, Word, Excel, PowerPoint, text)."
            )
        )
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A character cut at the end of the sample is still UTF-8; anything else reads as Latin-1.
        text = head.decode("latin-1") if exc.start < len(head) - 4 else head[: exc.start].decode("utf-8")
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if any(marker.decode() in lowered for marker in _MARKUP):
        raise MediaRejected(
            _(
                "SVG, HTML and XML files are not sent (they can carry scripts). "
                "Export an image as PNG or JPEG."
            )
        )
    return Detected("document", "text/plain", "txt")
