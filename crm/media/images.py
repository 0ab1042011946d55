"""Images with Pillow: checked (decompression bombs, truncated files), turned upright, stripped of
EXIF/GPS, resized and re-encoded at the best quality that fits the provider's limit, and a
thumbnail for the inbox."""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from flask_babel import gettext as _
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from crm.media.sniff import MediaRejected

MAX_PIXELS = 50_000_000  # a 50 MP photo is larger than any phone camera's
MAX_SIDE = 1600  # what WhatsApp itself sends at standard quality
THUMB_SIDE = 320
QUALITY_STEPS = (85, 78, 70, 62, 54, 46, 40)
PARALLEL = 2
# Pillow's own bomb check warns past MAX_IMAGE_PIXELS: an error instead, set once for the process
# (warnings.catch_warnings around each open would not be thread-safe).
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
_slots = threading.BoundedSemaphore(PARALLEL)


@dataclass(frozen=True)
class Encoded:
    data: bytes
    mime: str
    ext: str
    width: int
    height: int


def open_checked(path: Path | io.BytesIO) -> Image.Image:
    """Open an image and refuse decompression bombs before any pixel is decoded."""
    try:
        image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _bomb() from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise MediaRejected(_("The image can't be read: the file is damaged or not an image.")) from None
    width, height = image.size
    if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
        image.close()
        raise _bomb()
    return image


def _bomb() -> MediaRejected:
    return MediaRejected(
        _(
            "The image has too many pixels (over %(n)d megapixels) to be processed safely.",
            n=MAX_PIXELS // 10**6,
        )
    )


def _decoded(path: Path | io.BytesIO, side: int) -> Image.Image:
    """The image decoded (JPEG at a reduced scale when that still covers ``side``), upright."""
    image = open_checked(path)
    try:
        if image.format == "JPEG":
            # DCT scaling: decode at 1/2, 1/4 or 1/8 when that still covers the longest side we
            # keep. The box has the photo's proportions: Pillow scales by the tighter dimension.
            width, height = image.size
            scale = side / max(width, height)
            image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        image.close()
        raise MediaRejected(_("The image is damaged or incomplete (truncated): it can't be sent.")) from None
    return image


def upright_size(path: Path) -> tuple[int, int]:
    """Width and height as the image is shown: turned by its EXIF orientation (phones often store
    a photo sideways and say so). Reads the header only."""
    image = open_checked(path)
    try:
        width, height = image.size
        turned = image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)
    finally:
        image.close()
    return (height, width) if turned else (width, height)


def check_image(path: Path) -> tuple[int, int]:
    """Refuse bombs and damaged files now (the upload's answer), cheaply and without holding a
    whole photo in memory: a JPEG is decoded at 1/8 scale; other formats have their structure
    checked (PNG: every chunk and its checksum) without decoding pixels. The full decode is the
    task's, which does it a few at a time."""
    image = open_checked(path)
    try:
        size = image.size
        if image.format == "JPEG":
            image.close()
            image = _decoded(path, 64)
        else:
            image.verify()
    except MediaRejected:
        raise
    except Exception:
        raise MediaRejected(_("The image is damaged or incomplete (truncated): it can't be sent.")) from None
    finally:
        image.close()
    return size


def _has_transparency(image: Image.Image) -> bool:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        alpha = image.convert("RGBA").getchannel("A")
        low = alpha.getextrema()[0]
        return isinstance(low, int | float) and low < 255
    return False


def _encode(image: Image.Image, fmt: str, quality: int, icc: bytes | None) -> bytes:
    out = io.BytesIO()
    options: dict[str, object] = {"icc_profile": icc} if icc else {}
    if fmt == "JPEG":
        image.save(out, "JPEG", quality=quality, progressive=True, **options)
    else:
        image.save(out, "PNG", optimize=quality >= 85, **options)
    return out.getvalue()


def compress(path: Path, max_bytes: int, max_side: int = MAX_SIDE) -> Encoded:
    """The photo re-encoded without EXIF (so no GPS), upright, at most ``max_side`` pixels on its
    longest side, at the highest quality step that fits ``max_bytes`` (smaller if none does).

    At most ``PARALLEL`` photos are decoded at once per process: a 12 MP photo takes ~85 MB while
    it is worked on, and on two cores more at once only costs memory."""
    with _slots:
        return _compress(path, max_bytes, max_side)


def _compress(path: Path, max_bytes: int, max_side: int) -> Encoded:
    source = _decoded(path, max_side)
    image = source
    try:
        icc = source.info.get("icc_profile")
        keep_alpha = _has_transparency(source)
        mode = "RGBA" if keep_alpha else "RGB"
        if source.mode != mode:
            image = source.convert(mode)
        side = max_side
        while side >= 200:
            if max(image.size) > side:
                image.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=2.0)
            if keep_alpha:
                data = _encode(image, "PNG", 85, icc)
                if len(data) <= max_bytes:
                    return Encoded(data, "image/png", "png", *image.size)
            else:
                for quality in QUALITY_STEPS:
                    data = _encode(image, "JPEG", quality, icc)
                    if len(data) <= max_bytes:
                        return Encoded(data, "image/jpeg", "jpg", *image.size)
            side = int(max(image.size) * 0.75)
    finally:
        image.close()
        source.close()
    raise MediaRejected(_("The image can't be made small enough for WhatsApp."))


def thumbnail(path: Path | io.BytesIO) -> Encoded:
    """A small JPEG for the inbox (transparent parts on white)."""
    source = _decoded(path, THUMB_SIDE)
    image = source
    try:
        image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0)
        if image.mode in ("RGBA", "LA", "P"):
            rgba = image.convert("RGBA")
            image = Image.new("RGB", rgba.size, (255, 255, 255))
            image.paste(rgba, mask=rgba.getchannel("A"))
        elif image.mode != "RGB":
            image = image.convert("RGB")
        out = io.BytesIO()
        image.save(out, "JPEG", quality=70)
        return Encoded(out.getvalue(), "image/jpeg", "jpg", *image.size)
    finally:
        image.close()
        source.close()
