"""Photos: upright, without EXIF/GPS, resized and fitted to the limit; bombs and damaged files refused."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from flask import Flask
from PIL import Image

from crm.media import images
from crm.media.sniff import MediaRejected
from tests.media import files


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "photo"
    path.write_bytes(data)
    return path


def test_orientation_applied_and_exif_with_gps_stripped(app: Flask, tmp_path: Path) -> None:
    # Orientation 6: the camera held sideways; the stored pixels are 800x600, the photo is 600x800.
    path = _write(tmp_path, files.jpeg(800, 600, orientation=6, gps=True))
    with Image.open(path) as before:
        assert before.getexif().get_ifd(files.GPS_IFD)  # the original does carry a location
    result = images.compress(path, 5 * 1024 * 1024)
    out = Image.open(io.BytesIO(result.data))
    assert out.format == "JPEG" and out.size == (600, 800) == (result.width, result.height)
    assert not out.getexif() and "exif" not in out.info  # no orientation left to apply, no GPS
    # The red marker that was top-left in the stored pixels is top-right once turned upright.
    red = out.getpixel((590, 10))
    assert isinstance(red, tuple) and red[0] > 200 and red[1] < 60


@pytest.mark.parametrize("orientation", [None, 1, 3, 5, 6, 7, 8])
def test_the_size_a_photo_is_shown_at_follows_its_orientation(
    tmp_path: Path, orientation: int | None
) -> None:
    path = _write(tmp_path, files.jpeg(800, 600, orientation=orientation))
    turned = orientation in (5, 6, 7, 8)  # a quarter turn: the stored width is the shown height
    assert images.upright_size(path) == ((600, 800) if turned else (800, 600))
    with Image.open(io.BytesIO(images.thumbnail(path).data)) as thumbnail:  # as the thumbnail has it
        assert thumbnail.size == ((240, 320) if turned else (320, 240))


def test_large_photos_are_resized_and_fitted_to_the_limit(app: Flask, tmp_path: Path) -> None:
    path = _write(tmp_path, files.jpeg(3000, 2000, noise=True, quality=97))
    limit = 250 * 1024
    assert path.stat().st_size > limit
    result = images.compress(path, limit)
    assert len(result.data) <= limit
    assert max(result.width, result.height) <= images.MAX_SIDE
    assert result.width / result.height == pytest.approx(1.5, rel=0.01)


def test_best_quality_that_fits_is_kept(app: Flask, tmp_path: Path) -> None:
    path = _write(tmp_path, files.jpeg(1200, 900, noise=True))
    roomy = images.compress(path, 5 * 1024 * 1024)
    tight = images.compress(path, len(roomy.data) - 1)
    assert len(tight.data) < len(roomy.data)  # a lower quality step, only because it had to


def test_transparency_is_kept_as_png(app: Flask, tmp_path: Path) -> None:
    result = images.compress(_write(tmp_path, files.png(200, 100, transparent=True)), 5 * 1024 * 1024)
    out = Image.open(io.BytesIO(result.data))
    assert result.mime == "image/png" and out.mode == "RGBA"
    opaque = images.compress(_write(tmp_path, files.png(200, 100)), 5 * 1024 * 1024)
    assert opaque.mime == "image/jpeg"


def test_decompression_bomb_refused_before_decoding(app: Flask, tmp_path: Path) -> None:
    path = _write(tmp_path, files.png_bomb())
    assert path.stat().st_size < 100 * 1024  # a few KB that claim 900 megapixels
    for check in (images.check_image, lambda p: images.compress(p, 5 * 1024 * 1024), images.thumbnail):
        with pytest.raises(MediaRejected, match="too many pixels"):
            check(path)


def test_truncated_photo_refused(app: Flask, tmp_path: Path) -> None:
    path = _write(tmp_path, files.truncated_jpeg())
    with pytest.raises(MediaRejected, match="truncated"):
        images.check_image(path)
    with pytest.raises(MediaRejected, match="truncated"):
        images.compress(path, 5 * 1024 * 1024)


def test_not_an_image_refused(app: Flask, tmp_path: Path) -> None:
    with pytest.raises(MediaRejected, match="can't be read"):
        images.check_image(_write(tmp_path, b"\xff\xd8\xff" + b"garbage" * 10))


def test_thumbnail_is_small(app: Flask, tmp_path: Path) -> None:
    thumb = images.thumbnail(_write(tmp_path, files.jpeg(2000, 1000)))
    out = Image.open(io.BytesIO(thumb.data))
    assert out.format == "JPEG" and max(out.size) == images.THUMB_SIDE
