"""Files of every kind the media tests need, generated (never downloaded): real encoders where
the format matters (Pillow, the wave module, ffmpeg when present), minimal valid containers where
only the signature does."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import wave
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def jpeg(width: int = 800, height: int = 600, *, orientation: int | None = None, gps: bool = False,
         quality: int = 90, noise: bool = False) -> bytes:  # fmt: skip
    """A photo: a gradient with a marker in its top-left corner (red), so a test can tell which
    way up it ended; EXIF with Orientation and GPS as phones write them."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width // 5, height // 5), fill=(255, 0, 0))
    if noise:
        image = Image.blend(image, Image.effect_noise((width, height), 64).convert("RGB"), 0.5)
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    if orientation:
        exif[ORIENTATION] = orientation
    if gps:
        exif.get_ifd(GPS_IFD).update({1: "S", 2: (23.0, 33.0, 1.0), 3: "W", 4: (46.0, 38.0, 2.0)})
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, exif=exif)
    return out.getvalue()


def png(width: int = 64, height: int = 48, *, transparent: bool = False) -> bytes:
    image = Image.new(
        "RGBA" if transparent else "RGB", (width, height), (10, 120, 200, 0 if transparent else 255)
    )
    if transparent:
        ImageDraw.Draw(image).ellipse((8, 8, width - 8, height - 8), fill=(255, 200, 0, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def png_bomb(side: int = 30_000) -> bytes:
    """A PNG that says it has side x side pixels (900 MP at 30,000) in a few KB: a decompression
    bomb. The image data is one zlib stream of zero rows, as the classic bombs are built."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    compressor = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    data = b"".join(compressor.compress(row) for _ in range(200)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    whole = jpeg(800, 600, noise=True)
    return whole[: len(whole) // 2]


def svg_with_script() -> bytes:
    return (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<script>alert(document.cookie)</script><rect width="10" height="10"/></svg>'
    )


def html_page() -> bytes:
    return b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"


def pdf() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )


def _ooxml(folder: str, main: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr(f"{folder}/{main}", "<document/>")
    return out.getvalue()


def docx() -> bytes:
    return _ooxml("word", "document.xml")


def xlsx() -> bytes:
    return _ooxml("xl", "workbook.xml")


def plain_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("notes.txt", "hello")
    return out.getvalue()


def legacy_doc() -> bytes:
    """An OLE2 compound file with a WordDocument stream name in its directory."""
    return (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504 + "WordDocument".encode("utf-16-le") + b"\0" * 512
    )


def text(content: str = "Pedido 123: 2 caixas\n") -> bytes:
    return content.encode("utf-8")


def exe() -> bytes:
    return b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\0" * 200


def wav(seconds: float = 0.5) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\x10" * int(8000 * seconds))
    return out.getvalue()


def mp3_header() -> bytes:
    """An ID3-tagged MP3's start (enough for its type; players need real frames)."""
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + b"\0" * 400


def ogg_opus_header() -> bytes:
    return b"OggS\x00\x02" + b"\0" * 20 + b"\x01\x13OpusHead\x01\x01" + b"\0" * 200


def mp4_header(brand: bytes = b"isom") -> bytes:
    return struct.pack(">I", 24) + b"ftyp" + brand + b"\0\0\x02\0" + brand + b"mp41" + b"\0" * 300


def ffmpeg() -> str | None:
    return shutil.which("ffmpeg")


def encoded(kind: str, folder: Path) -> bytes:
    """A real, playable file made by ffmpeg: ``mp4`` (H.264/AAC), ``webm`` (VP8/Vorbis video),
    ``mov`` (QuickTime), ``ogg`` (Opus voice), ``mp3``, ``webm-audio`` (Opus, as browsers record)."""
    binary = ffmpeg()
    assert binary, "needs ffmpeg"
    video = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=1"]
    audio = ["-f", "lavfi", "-i", "sine=frequency=440:duration=1"]
    recipes = {
        "mp4": (
            [*video, *audio, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"],
            "mp4",
        ),
        "webm": ([*video, *audio, "-c:v", "libvpx", "-c:a", "libvorbis", "-shortest"], "webm"),
        "mov": ([*video, "-c:v", "mpeg4"], "mov"),
        "ogg": ([*audio, "-c:a", "libopus"], "ogg"),
        "mp3": ([*audio, "-c:a", "libmp3lame"], "mp3"),
        "webm-audio": ([*audio, "-c:a", "libopus"], "webm"),
    }
    args, ext = recipes[kind]
    out = folder / f"{kind}.{ext}"
    subprocess.run([binary, "-v", "error", "-y", *args, str(out)], check=True, timeout=60)
    return out.read_bytes()
