#!/usr/bin/env python3
"""Benchmark: preparing outbound phone photos in the worker (compress + thumbnail), with an output check.

    .venv/bin/python bench/media.py                  # 200 photos of 12 MP, one worker run
    .venv/bin/python bench/media.py --repeat 3       # 3 worker runs, medians of the runs
    .venv/bin/python bench/media.py --threads 4      # 4 photos at a time, as the default WORKER_THREADS=4 can

What it does, all locally, with no server, database or network:

1. Photos, made once and kept in ``--cache`` (default ``bench/.cache/media``, git-ignored; not
   timed): ``--count`` different 4000x3000 JPEGs at quality 92 with 4:2:0 chroma, as a phone
   writes them. Each has a smooth rotated gradient, shapes, a blotchy mid-scale texture and
   per-pixel sensor noise (its strength varies per photo, like ISO), so the files are 3-6 MB.
   The EXIF block has make, model, dates, exposure, an Orientation (1 for most; 6, stored
   landscape and shown portrait, for 50 of the first 200) and a GPS IFD.
2. A worker process (this script again with ``--_worker``, a fresh interpreter) creates the app
   as ``flask crm worker`` has it loaded, then does for each photo what
   ``crm.media.outbound.prepare_file`` does for an image sent on the Cloud API:
   ``images.compress(photo, 5 MB)``, writes ``final.jpg``, ``images.thumbnail(final)``. Those
   three steps are timed with ``perf_counter`` (and the thread's CPU time), after one untimed warm-up
   photo. At the end the worker reads its own peak RSS (``ru_maxrss``) and reports it, with the
   RSS it had before the first photo.
3. This process checks every output: at most 5 MB, a JPEG, longest side at most 1600 px, upright
   (portrait when the photo's Orientation was 6), no EXIF left (so no GPS), and a JPEG thumbnail
   of at most 320 px.
4. It prints the per-photo median / p95 / max in ms, the median output and thumbnail sizes, the
   worker's peak RSS, the check failures, and PASS/FAIL against the targets: median ≤ 300 ms per
   photo and peak worker memory ≤ 200 MB, both for one photo at a time (``--threads 1``). With
   ``--repeat``, one line per run and the medians of the runs.

Exit status: 0 every output passed the checks (whether or not the targets are met), 1 an output
failed a check, 2 setup or worker error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image, ImageChops, ImageDraw, ImageFilter, TiffImagePlugin

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / "bench" / ".cache" / "media"

TARGET_MEDIAN_MS = 300.0
TARGET_PEAK_MB = 200.0

WIDTH, HEIGHT = 4000, 3000  # 12 MP, as the sensor stores it (landscape, whatever the Orientation)
QUALITY = 92
GENERATOR = "v1"  # part of the file names: change it when the photos change
NOISE_SIGMA = 10  # the per-pixel noise tile; each photo scales it by 0.5-1.4 (3-6 MB files)
MAX_SIDE = 1600  # crm.media.images.MAX_SIDE
THUMB_SIDE = 320  # crm.media.images.THUMB_SIDE
TIMEOUT_PER_PHOTO_S = 10.0  # the worker is killed after count x this (+ 60 s to start)


def log(msg: str) -> None:
    print(f"[media] {msg}", flush=True)


# -- the photos ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Photo:
    path: Path
    orientation: int


def photo_path(cache: Path, seed: int) -> Path:
    return cache / f"photo-{GENERATOR}-{seed:04d}.jpg"


def orientation_for(seed: int) -> int:
    return 6 if random.Random(f"orientation-{seed}").random() < 0.2 else 1  # 50 of the first 200


def _exif(rng: random.Random, orientation: int, seed: int) -> Image.Exif:
    rational = TiffImagePlugin.IFDRational
    taken = (datetime(2026, 11, 1, 8, 0) + timedelta(minutes=37 * seed)).strftime("%Y:%m:%d %H:%M:%S")
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "samsung"
    exif[ExifTags.Base.Model] = "SM-S911B"
    exif[ExifTags.Base.Software] = "S911BXXU3BWK5"
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.DateTime] = taken
    exif[ExifTags.IFD.Exif] = {
        ExifTags.Base.DateTimeOriginal: taken,
        ExifTags.Base.ExposureTime: rational(1, rng.choice((30, 60, 120, 250, 500))),
        ExifTags.Base.FNumber: rational(18, 10),
        ExifTags.Base.ISOSpeedRatings: rng.choice((50, 100, 200, 400, 800)),
        ExifTags.Base.FocalLength: rational(630, 100),
    }

    def dms(value: float) -> tuple[TiffImagePlugin.IFDRational, ...]:
        minutes = (value % 1) * 60
        return rational(int(value)), rational(int(minutes)), rational(round((minutes % 1) * 6000), 100)

    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSVersionID: b"\x02\x02\x00\x00",
        ExifTags.GPS.GPSLatitudeRef: "S",
        ExifTags.GPS.GPSLatitude: dms(rng.uniform(22.8, 23.9)),
        ExifTags.GPS.GPSLongitudeRef: "W",
        ExifTags.GPS.GPSLongitude: dms(rng.uniform(46.3, 46.9)),
        ExifTags.GPS.GPSAltitude: rational(rng.randint(700, 800)),
    }
    return exif


def _scene(rng: random.Random) -> Image.Image:
    """The picture at 1/4 scale: a rotated colour gradient, shapes, a blotchy texture."""
    w, h = WIDTH // 4, HEIGHT // 4
    ramp = Image.linear_gradient("L")
    channels = []
    for _ in range(3):
        lo, hi = rng.randrange(256), rng.randrange(256)
        channels.append(ramp.point(lambda v, lo=lo, hi=hi: lo + (hi - lo) * v // 255))
    angle = rng.uniform(-40, 40)
    rotated = Image.merge("RGB", channels).rotate(angle, Image.Resampling.BICUBIC)
    scene = rotated.crop((48, 48, 208, 208)).resize((w, h), Image.Resampling.BICUBIC)  # no corners
    light = Image.radial_gradient("L").resize((w, h)).point(lambda v: 255 - v // 3)
    scene = ImageChops.multiply(scene, Image.merge("RGB", [light] * 3))  # a vignette
    draw = ImageDraw.Draw(scene)
    for _ in range(rng.randint(15, 40)):
        x0, y0 = rng.randrange(-200, w), rng.randrange(-200, h)
        box = (x0, y0, x0 + rng.randint(30, 500), y0 + rng.randint(30, 400))
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        kind = rng.random()
        if kind < 0.4:
            draw.ellipse(box, fill=colour)
        elif kind < 0.8:
            draw.rectangle(box, fill=colour)
        else:
            corners = [(rng.randrange(w), rng.randrange(h)) for _ in range(rng.randint(3, 6))]
            draw.polygon(corners, fill=colour)
    texture = Image.effect_noise((w, h), rng.uniform(20, 45)).filter(ImageFilter.GaussianBlur(1.5))
    return ImageChops.add(scene, Image.merge("RGB", [texture] * 3), 1.0, -128)


def make_photo(path: Path, seed: int, noise: Image.Image) -> None:
    rng = random.Random(seed)
    photo = _scene(rng).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
    # Sensor noise: the shared tile shifted (so each photo's differs) and scaled per photo.
    strength = rng.uniform(0.5, 1.4)
    grain = ImageChops.offset(noise, rng.randrange(WIDTH), rng.randrange(HEIGHT))
    grain = grain.point(lambda v: round(128 + (v - 128) * strength))
    photo = ImageChops.add(photo, Image.merge("RGB", [grain] * 3), 1.0, -128)
    tmp = path.with_suffix(".tmp")
    exif = _exif(rng, orientation_for(seed), seed)
    photo.save(tmp, "JPEG", quality=QUALITY, subsampling="4:2:0", exif=exif)
    tmp.replace(path)


def ensure_photos(cache: Path, count: int) -> list[Photo]:
    cache.mkdir(parents=True, exist_ok=True)
    photos = [Photo(photo_path(cache, seed), orientation_for(seed)) for seed in range(count)]
    missing = [seed for seed, photo in enumerate(photos) if not photo.path.exists()]
    if missing:
        log(f"making {len(missing)} photos of {WIDTH}x{HEIGHT} in {cache} (once; not timed)")
        started = time.monotonic()
        noise = Image.effect_noise((WIDTH, HEIGHT), NOISE_SIGMA)
        for done, seed in enumerate(missing, 1):
            make_photo(photos[seed].path, seed, noise)
            if done % 25 == 0 or done == len(missing):
                log(f"  {done}/{len(missing)} ({time.monotonic() - started:.0f} s)")
    sizes = [p.path.stat().st_size for p in photos]
    rotated = sum(p.orientation == 6 for p in photos)
    log(
        f"{count} photos, {min(sizes) / 1e6:.1f}-{max(sizes) / 1e6:.1f} MB "
        f"(median {statistics.median(sizes) / 1e6:.1f} MB), {rotated} with Orientation 6"
    )
    return photos


# -- the worker (a separate process) ---------------------------------------------------------------


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def worker(paths: Sequence[str], out: Path, threads: int) -> dict[str, Any]:
    """What the media worker does for each photo, timed; runs in its own interpreter."""
    from crm import create_app
    from crm.media import images
    from crm.media.limits import limit_for
    from crm.worker import tune_task_process

    tune_task_process()  # as `flask crm worker` does at start
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "bench",
            "SQLALCHEMY_DATABASE_URI": "sqlite://",
            "INSTANCE_PATH": str(out / "instance"),
        }
    )
    limit = limit_for("cloud", "image").max_bytes

    def prepare(i: int, path: str) -> dict[str, Any]:
        folder = out / f"{i:04d}"
        folder.mkdir(exist_ok=True)
        wall, cpu = time.perf_counter(), time.thread_time()
        encoded = images.compress(Path(path), limit)
        final = folder / f"final.{encoded.ext}"
        final.write_bytes(encoded.data)
        thumb = images.thumbnail(final)
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        (folder / f"thumb.{thumb.ext}").write_bytes(thumb.data)
        return {"ms": wall * 1000, "cpu_ms": cpu * 1000, "final": final.name, "mime": encoded.mime}

    with app.app_context():
        prepare(-1, paths[0])  # warm-up: lazy imports and plugin registration, not counted
        shutil.rmtree(out / "-001")
        baseline_kb = _rss_kb()
        started = time.perf_counter()
        if threads == 1:
            results = [prepare(i, p) for i, p in enumerate(paths)]
        else:
            with ThreadPoolExecutor(threads) as pool:
                results = list(pool.map(prepare, range(len(paths)), paths))
        elapsed = time.perf_counter() - started
    return {
        "results": results,
        "elapsed_s": elapsed,
        "baseline_rss_kb": baseline_kb,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # KB on Linux
    }


# -- checks and the report -------------------------------------------------------------------------


def check(photo: Photo, folder: Path, result: dict[str, Any], limit: int) -> tuple[list[str], int, int]:
    """What is wrong with one photo's output (nothing, normally), its size and its thumbnail's."""
    problems = []
    final = folder / result["final"]
    size = final.stat().st_size
    if size > limit:
        problems.append(f"{size} bytes > {limit}")
    with Image.open(final) as image:
        if image.format != "JPEG" or result["mime"] != "image/jpeg":
            problems.append(f"{image.format} / {result['mime']}, not a JPEG")
        width, height = image.size
        if max(width, height) > MAX_SIDE:
            problems.append(f"{width}x{height}: longest side over {MAX_SIDE}")
        if (height > width) != (photo.orientation == 6):
            problems.append(f"{width}x{height}: not upright (Orientation {photo.orientation})")
        exif = image.getexif()
        if ExifTags.IFD.GPSInfo in exif or exif.get_ifd(ExifTags.IFD.GPSInfo):
            problems.append("GPS left in the EXIF")
        elif len(exif):
            problems.append(f"EXIF left: tags {sorted(exif)}")
    thumb = folder / "thumb.jpg"
    with Image.open(thumb) as image:
        if image.format != "JPEG" or max(image.size) > THUMB_SIDE:
            problems.append(f"thumbnail {image.format} {image.size[0]}x{image.size[1]}")
    return problems, size, thumb.stat().st_size


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def run_once(photos: Sequence[Photo], threads: int, timeout: float) -> dict[str, float]:
    from crm.media.limits import limit_for

    limit = limit_for("cloud", "image").max_bytes
    with tempfile.TemporaryDirectory(prefix="zapdesk-bench-media-") as tmp:
        out = Path(tmp)
        (out / "photos.json").write_text(json.dumps([str(p.path) for p in photos]))
        cmd = [sys.executable, __file__, "--_worker", str(out), "--threads", str(threads)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"the worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        results = report["results"]
        failures, sizes, thumbs = 0, [], []
        for i, (photo, result) in enumerate(zip(photos, results, strict=True)):
            problems, size, thumb = check(photo, out / f"{i:04d}", result, limit)
            sizes.append(size)
            thumbs.append(thumb)
            if problems:
                failures += 1
                if failures <= 5:
                    log(f"  FAILED {photo.path.name}: {'; '.join(problems)}")
    ms = [r["ms"] for r in results]
    return {
        "median": statistics.median(ms),
        "p95": pct(ms, 95),
        "max": max(ms),
        "cpu": statistics.median(r["cpu_ms"] for r in results),
        "per_s": len(results) / report["elapsed_s"],
        "out_kb": statistics.median(sizes) / 1024,
        "out_max_kb": max(sizes) / 1024,
        "thumb_kb": statistics.median(thumbs) / 1024,
        "base_mb": report["baseline_rss_kb"] / 1024,
        "peak_mb": report["peak_rss_kb"] / 1024,
        "failures": failures,
    }


def describe(r: dict[str, float]) -> str:
    return (
        f"median {r['median']:.0f} ms, p95 {r['p95']:.0f}, max {r['max']:.0f} "
        f"(CPU median {r['cpu']:.0f} ms), {r['per_s']:.2f} photos/s; output median {r['out_kb']:.0f} KB "
        f"(max {r['out_max_kb']:.0f}), thumbnail {r['thumb_kb']:.1f} KB; "
        f"worker RSS {r['base_mb']:.0f} MB before, peak {r['peak_mb']:.0f} MB; failures {r['failures']:.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--count", type=int, default=200, help="photos")
    p.add_argument("--repeat", type=int, default=1, help="worker runs; medians of the runs")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the photos are kept")
    p.add_argument("--threads", type=int, default=1, help="photos prepared at a time in the worker")
    p.add_argument("--_worker", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._worker:
        paths = json.loads((args._worker / "photos.json").read_text())
        print(json.dumps(worker(paths, args._worker, args.threads)))
        return 0

    if args.count < 1 or args.repeat < 1 or args.threads < 1:
        p.error("--count, --repeat and --threads must be at least 1")
    try:
        photos = ensure_photos(args.cache, args.count)
        log(
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
            f"{args.repeat} worker run(s), {args.threads} photo(s) at a time"
        )
        runs = []
        for n in range(1, args.repeat + 1):
            runs.append(run_once(photos, args.threads, TIMEOUT_PER_PHOTO_S * args.count + 60))
            log(f"run {n}: {describe(runs[-1])}")
    except (OSError, RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        log(f"error: {exc}")
        return 2
    summary = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    summary["failures"] = sum(r["failures"] for r in runs)
    if args.repeat > 1:
        log(f"medians of {args.repeat} runs: {describe(summary)} (failures: all runs)")
    fast = summary["median"] <= TARGET_MEDIAN_MS
    small = summary["peak_mb"] <= TARGET_PEAK_MB
    log(
        f"targets: median {summary['median']:.0f} ms <= {TARGET_MEDIAN_MS:.0f} ms "
        f"{'PASS' if fast else 'FAIL'}; peak worker RSS {summary['peak_mb']:.0f} MB <= "
        f"{TARGET_PEAK_MB:.0f} MB {'PASS' if small else 'FAIL'}; "
        f"{args.count} photos x {args.repeat} run(s), {summary['failures']:.0f} output(s) failed the checks"
        + (f" (the targets are for 1 photo at a time, this ran {args.threads})" if args.threads > 1 else "")
    )
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
