"""Audio and video through ffmpeg, when the machine has it: audio becomes a WhatsApp voice note
(OGG/Opus, mono), video becomes MP4 (H.264 + AAC) when it is not that already. Without ffmpeg,
formats WhatsApp takes as they are pass through and the rest is refused with a clear reason."""

from __future__ import annotations

import functools
import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import current_app
from flask_babel import gettext as _

from crm.media.sniff import MediaRejected

log = logging.getLogger(__name__)

TIMEOUT = 600  # seconds for one conversion; a stuck ffmpeg must not hold a worker forever


@dataclass(frozen=True)
class Probe:
    container: str
    video_codec: str | None
    audio_codec: str | None
    duration: float | None


def ffmpeg_binary() -> str | None:
    """FFMPEG_BINARY (a name on PATH or a path; default ``ffmpeg``), if it is there."""
    return _which(current_app.config.get("FFMPEG_BINARY") or "ffmpeg")


def ffprobe_binary() -> str | None:
    ffmpeg = ffmpeg_binary()
    if ffmpeg is None:
        return None
    sibling = Path(ffmpeg).with_name("ffprobe")
    return str(sibling) if sibling.exists() else _which("ffprobe")


@functools.lru_cache(maxsize=8)
def _which(name: str) -> str | None:
    return shutil.which(name)


def available() -> bool:
    return ffmpeg_binary() is not None and ffprobe_binary() is not None


def _run(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(args, capture_output=True, timeout=TIMEOUT, check=True)  # noqa: S603
    except subprocess.TimeoutExpired:
        raise MediaRejected(_("Converting the file took too long.")) from None
    except subprocess.CalledProcessError as exc:
        # Its output quotes the file's own metadata (the sender's): only at DEBUG.
        log.info("%s failed with exit code %s", Path(args[0]).name, exc.returncode)
        log.debug("%s said: %s", Path(args[0]).name, exc.stderr[-500:].decode(errors="replace"))
        raise MediaRejected(
            _("The file could not be converted: it is damaged or in an unknown format.")
        ) from None


def probe(path: Path) -> Probe:
    binary = ffprobe_binary()
    if binary is None:
        raise MediaRejected(_("ffprobe is not installed."))
    out = _run([binary, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)]).stdout
    info: dict[str, Any] = json.loads(out or b"{}")
    streams = info.get("streams") or []
    video = next((s for s in streams if s.get("codec_type") == "video" and not _is_cover(s)), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    fmt = info.get("format") or {}
    try:
        duration: float | None = float(str(fmt.get("duration")))
    except ValueError:
        duration = None
    return Probe(
        container=str(fmt.get("format_name") or ""),
        video_codec=video.get("codec_name") if video else None,
        audio_codec=audio.get("codec_name") if audio else None,
        duration=duration,
    )


def _is_cover(stream: dict[str, Any]) -> bool:
    return bool((stream.get("disposition") or {}).get("attached_pic"))


def to_voice_note(source: Path, dest: Path) -> None:
    """OGG/Opus mono: what WhatsApp plays as a voice note."""
    binary = ffmpeg_binary()
    assert binary is not None
    _run([binary, "-nostdin", "-v", "error", "-y", "-i", str(source), "-vn", "-map_metadata", "-1",
          "-ac", "1", "-ar", "48000", "-c:a", "libopus", "-b:a", "32k", "-application", "voip",
          "-f", "ogg", str(dest)])  # fmt: skip


def to_mp4(source: Path, dest: Path, max_bytes: int, duration: float | None) -> None:
    """MP4 with H.264 video and AAC audio, at most 720p, bitrate chosen to fit ``max_bytes``."""
    binary = ffmpeg_binary()
    assert binary is not None
    args = [binary, "-nostdin", "-v", "error", "-y", "-i", str(source), "-map_metadata", "-1",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-profile:v", "main",
            "-vf", "scale='min(1280,iw)':-2", "-c:a", "aac", "-b:a", "96k",
            "-movflags", "+faststart"]  # fmt: skip
    if duration and duration > 0:
        # 90% of the budget over the length, less the audio: a file that fits at the first try.
        video_kbps = max(150, int(max_bytes * 8 * 0.9 / duration / 1000) - 96)
        args += ["-b:v", f"{video_kbps}k", "-maxrate", f"{video_kbps}k", "-bufsize", f"{video_kbps * 2}k"]
    else:
        args += ["-crf", "28"]
    _run([*args, "-f", "mp4", str(dest)])


def is_whatsapp_mp4(found: Probe) -> bool:
    """H.264 video (with AAC audio or none) in an MP4/3GP container: sendable as it is."""
    return (
        ("mp4" in found.container or "3gp" in found.container)
        and found.video_codec == "h264"
        and found.audio_codec in (None, "aac")
    )
