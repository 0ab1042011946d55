"""What the benchmark scripts share: running `flask` commands and the processes they start, with
their output kept in log files, and the one error a benchmark reports as a clear line."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtualenv the script runs in (.venv/bin)


class BenchError(Exception):
    """Setup or environment problem: printed as one clear line, exit status 2."""


def run_cli(argv: tuple[str, ...], env: dict[str, str], timeout: float) -> str:
    """``flask <argv>`` in the repository; its stdout, or a BenchError with the last lines."""
    try:
        done = subprocess.run(
            [str(BIN / "flask"), *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"`flask {' '.join(argv[:2])}` did not finish in {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BenchError(f"`flask {' '.join(argv[:2])}` failed ({done.returncode}): " + " | ".join(tail))
    return done.stdout


def spawn(
    folder: Path, name: str, cmd: list[str], env: dict[str, str], logs: list[IO[Any]]
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session, its output in ``folder/<name>.log`` (the file is added to
    ``logs``, for the caller to close)."""
    logfile = open(folder / f"{name}.log", "wb")  # noqa: SIM115 (closed by the caller)
    logs.append(logfile)
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True
    )


def log_tail(folder: Path, name: str, lines: int = 15) -> str:
    try:
        return "\n".join((folder / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


HOST = "127.0.0.1"  # the benchmarks only ever talk to this machine's services
PG_PORT = 5432


def pg_connect(dbname: str) -> Any:
    """An autocommit psycopg connection to the local PostgreSQL (user postgres, trust auth), or a
    BenchError saying it is not reachable."""
    import psycopg

    try:
        return psycopg.connect(
            host=HOST, port=PG_PORT, user="postgres", dbname=dbname, connect_timeout=5, autocommit=True
        )
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BenchError(f"PostgreSQL at {HOST}:{PG_PORT} (user postgres) is not reachable: {first}") from exc


def redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=30)


def cloud_webhook_body(
    waba_id: str,
    phone_number_id: str,
    display_phone: str,
    contacts: list[dict[str, Any]],
    messages: list[dict[str, Any]],
) -> bytes:
    """A Meta-shaped Cloud API ``messages`` webhook body (compact JSON, UTF-8)."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": display_phone, "phone_number_id": phone_number_id},
        "contacts": contacts,
        "messages": messages,
    }
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"value": value, "field": "messages"}]}],
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def meta_signature(app_secret: str | bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` header Meta sends with ``body``."""
    key = app_secret.encode() if isinstance(app_secret, str) else app_secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
