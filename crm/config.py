"""Configuration, read from the environment in one place (see README "Configuration")."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = Path(os.environ.get("CRM_INSTANCE_PATH", ROOT / "instance"))


def _secret_key(instance: Path) -> str:
    """SECRET_KEY from the environment, else one generated once into instance/secret_key.

    Generated once (and kept) so sessions and encrypted secrets survive restarts.
    """
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    path = instance / "secret_key"
    if not path.exists():
        instance.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _engine_options(database_url: str) -> dict[str, Any]:
    """PostgreSQL: one pooled connection per server thread, so no thread waits for a connection
    and none are opened and closed under load. SQLite: the driver's defaults."""
    if not database_url.startswith("postgresql"):
        return {"pool_pre_ping": True, "hide_parameters": True}
    threads = max(_int("WEB_THREADS", 32), _int("WORKER_THREADS", 4) + _int("AI_WORKER_THREADS", 8))
    # hide_parameters: an error's message never carries the statement's values (message text,
    # phone numbers, keys) into logs.
    return {
        "pool_pre_ping": True,
        "hide_parameters": True,
        "pool_size": threads,
        "max_overflow": 8,
        "pool_recycle": 1800,
        # A database that drops packets (not refuses them) must not hang requests and /readyz.
        "connect_args": {"connect_timeout": _int("DATABASE_CONNECT_TIMEOUT", 5)},
    }


def from_env() -> dict[str, Any]:
    """The whole configuration as a dict, from environment variables with the documented defaults."""
    instance = INSTANCE
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{instance / 'crm.sqlite3'}"
    return {
        "INSTANCE_PATH": str(instance),
        "SECRET_KEY": _secret_key(instance),
        "ENCRYPTION_KEY": os.environ.get("ENCRYPTION_KEY") or None,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": os.environ.get("REDIS_URL") or None,
        # Connections per process; threads beyond it wait for one (every open websocket is a thread).
        "REDIS_MAX_CONNECTIONS": _int("REDIS_MAX_CONNECTIONS", 200),
        "GRAPH_API_URL": os.environ.get("GRAPH_API_URL", "https://graph.facebook.com/v23.0"),
        "GEMINI_API_KEY": os.environ.get("GEMINI_API_KEY") or None,
        "GEMINI_BASE_URL": os.environ.get("GEMINI_BASE_URL") or None,
        # AI replies: wait this long after a customer's message for more before answering, so a
        # burst gets one answer; give up retrying Gemini this long after their message (they get
        # the fallback instead); one request may take this long.
        "AI_DEBOUNCE_SECONDS": _float("AI_DEBOUNCE_SECONDS", 3.0),
        "AI_REPLY_DEADLINE_SECONDS": _int("AI_REPLY_DEADLINE_SECONDS", 90),
        "AI_MAX_ATTEMPTS": _int("AI_MAX_ATTEMPTS", 5),
        "AI_TIMEOUT_SECONDS": _float("AI_TIMEOUT_SECONDS", 25.0),
        # The context sent with each request: the last messages plus the knowledge, this many
        # tokens at most (estimated at 4 characters a token).
        "AI_CONTEXT_TOKENS": _int("AI_CONTEXT_TOKENS", 32000),
        # Threads of the AI queue, apart from the sends' queue so a backlog never delays them.
        # They mostly wait on Gemini (seconds per answer), so there are more of them.
        "AI_WORKER_THREADS": _int("AI_WORKER_THREADS", 8),
        "MEDIA_STORAGE": os.environ.get("MEDIA_STORAGE", "local"),
        "MEDIA_ROOT": os.environ.get("MEDIA_ROOT") or None,  # default: <instance>/media
        "S3_BUCKET": os.environ.get("S3_BUCKET") or None,
        "S3_PREFIX": os.environ.get("S3_PREFIX", ""),
        "S3_ENDPOINT_URL": os.environ.get("S3_ENDPOINT_URL") or None,
        "S3_REGION": os.environ.get("S3_REGION") or None,
        # Unset: boto3's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, instance roles...).
        "S3_ACCESS_KEY_ID": os.environ.get("S3_ACCESS_KEY_ID") or None,
        "S3_SECRET_ACCESS_KEY": os.environ.get("S3_SECRET_ACCESS_KEY") or None,
        # Audio to voice notes and video to MP4 need ffmpeg (and ffprobe beside it).
        "FFMPEG_BINARY": os.environ.get("FFMPEG_BINARY", "ffmpeg"),
        # Sessions (ASVS L2: absolute lifetime, idle timeout).
        "SESSION_LIFETIME_HOURS": _int("SESSION_LIFETIME_HOURS", 24),
        "SESSION_IDLE_MINUTES": _int("SESSION_IDLE_MINUTES", 30),
        # Login throttling: failures allowed per window before 429.
        "LOGIN_MAX_FAILURES_PER_ACCOUNT": _int("LOGIN_MAX_FAILURES_PER_ACCOUNT", 5),
        "LOGIN_MAX_FAILURES_PER_IP": _int("LOGIN_MAX_FAILURES_PER_IP", 20),
        "LOGIN_FAILURE_WINDOW_SECONDS": _int("LOGIN_FAILURE_WINDOW_SECONDS", 15 * 60),
        "INVITATION_DAYS": _int("INVITATION_DAYS", 7),
        # Number of reverse proxies in front of the app whose X-Forwarded-* headers are trusted.
        "TRUSTED_PROXIES": _int("TRUSTED_PROXIES", 0),
        # Huey: immediate runs tasks inline (tests); otherwise Redis or the SQLite file below.
        "HUEY_IMMEDIATE": False,
        "HUEY_SQLITE_PATH": os.environ.get("HUEY_SQLITE_PATH", str(instance / "queue.sqlite3")),
        "WORKER_THREADS": _int("WORKER_THREADS", 4),
        # How long a send may take before another worker takes it over (the crash-recovery delay).
        "OUTBOX_LEASE_SECONDS": _int("OUTBOX_LEASE_SECONDS", 120),
        # Each worker and gateway process writes a heartbeat this often (and every process
        # flushes its metric counters and recent errors); three missed beats make it stale.
        "HEARTBEAT_SECONDS": _float("HEARTBEAT_SECONDS", 15.0),
        # GET /metrics: with a token, only "Authorization: Bearer <token>"; without one, only
        # requests from loopback or private addresses.
        "METRICS_TOKEN": os.environ.get("METRICS_TOKEN") or None,
        # How long /readyz and /metrics wait for Redis before calling it down.
        "PROBE_TIMEOUT_SECONDS": _float("PROBE_TIMEOUT_SECONDS", 1.0),
        "WEB_THREADS": _int("WEB_THREADS", 32),
        "WEB_CONCURRENCY": _int("WEB_CONCURRENCY", 1),
        # Argon2id, OWASP password storage cheat sheet: m=19 MiB, t=2, p=1.
        "ARGON2_MEMORY_KIB": 19 * 1024,
        "ARGON2_TIME_COST": 2,
        "ARGON2_PARALLELISM": 1,
        "LANGUAGES": ["en", "pt_BR"],
        "BABEL_DEFAULT_LOCALE": "en",
        "BABEL_DEFAULT_TIMEZONE": "UTC",
        "BABEL_TRANSLATION_DIRECTORIES": str(ROOT / "crm" / "translations"),
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(database_url),
        "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session, which has its own limits
        "WTF_CSRF_SSL_STRICT": True,
        "SESSION_COOKIE_NAME": "zapdesk_session",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "MAX_CONTENT_LENGTH": _int("MAX_CONTENT_LENGTH", 110 * 1024 * 1024),
        "TESTING": False,
    }
