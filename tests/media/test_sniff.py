"""The real type of a file comes from its content; only what WhatsApp can carry passes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from crm.media.sniff import MediaRejected, sniff
from tests.media import files


@pytest.mark.parametrize(
    ("make", "kind", "mime", "convert"),
    [
        (files.jpeg, "image", "image/jpeg", False),
        (files.png, "image", "image/png", False),
        (lambda: files.png(transparent=True), "image", "image/png", False),
        (lambda: b"GIF89a" + b"\0" * 40, "image", "image/gif", True),
        (lambda: b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 40, "image", "image/webp", True),
        (files.pdf, "document", "application/pdf", False),
        (
            files.docx,
            "document",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            False,
        ),
        (files.xlsx, "document", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", False),
        (files.legacy_doc, "document", "application/msword", False),
        (files.text, "document", "text/plain", False),
        (lambda: "Preço: R$ 10,00\n".encode("latin-1"), "document", "text/plain", False),
        (files.wav, "audio", "audio/wav", True),
        (files.mp3_header, "audio", "audio/mpeg", False),
        (lambda: b"\xff\xf1\x50\x80" + b"\0" * 100, "audio", "audio/aac", False),
        (lambda: b"#!AMR\n" + b"\0" * 40, "audio", "audio/amr", False),
        (files.ogg_opus_header, "audio", "audio/ogg", False),
        (files.mp4_header, "video", "video/mp4", False),
        (lambda: files.mp4_header(b"M4A "), "audio", "audio/mp4", False),
        (lambda: files.mp4_header(b"3gp5"), "video", "video/3gpp", False),
        (lambda: files.mp4_header(b"qt  "), "video", "video/quicktime", True),
    ],
)
def test_detected_from_content(
    app: Flask, tmp_path: Path, make: Callable[[], bytes], kind: str, mime: str, convert: bool
) -> None:
    path = tmp_path / "upload"
    path.write_bytes(make())
    found = sniff(path)
    assert (found.kind, found.mime, found.convert) == (kind, mime, convert)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (files.svg_with_script, "SVG"),
        (files.html_page, "HTML"),
        (lambda: b"  \n<svg onload=alert(1)>", "SVG"),
        (files.plain_zip, "ZIP"),
        (files.exe, "can't be sent"),
        (lambda: files.mp4_header(b"heic"), "HEIC"),
        (lambda: b"", "empty"),
    ],
)
def test_refused_with_a_reason(app: Flask, tmp_path: Path, make: Callable[[], bytes], reason: str) -> None:
    path = tmp_path / "upload.pdf"  # the name never matters
    path.write_bytes(make())
    with pytest.raises(MediaRejected) as refused:
        sniff(path)
    assert reason in refused.value.message and refused.value.status == 422
