#!/usr/bin/env python3
"""Benchmark: Cloud API webhook ingest on the real server (scaled mode), with a data check.

    .venv/bin/python bench/ingest.py                  # 3 x 30 s at 400 req/s (the target)
    .venv/bin/python bench/ingest.py --rate 1000      # another fixed rate
    .venv/bin/python bench/ingest.py --find-max       # 200, 400, 600, ... until p99 > 100 ms or errors

What it does, all on 127.0.0.1:

1. Setup (idempotent): drops and recreates the PostgreSQL database ``zapdesk_bench``, flushes Redis
   db 14, runs ``flask db upgrade``, ``flask crm create-admin`` and ``flask crm add-account
   --provider cloud`` (the webhook path comes from the JSON last line) in a temporary instance dir.
2. Starts the product as it runs in scaled mode: ``gunicorn -k gthread --threads 16 -w N wsgi:app``
   plus ``flask crm worker``, and waits for ``/healthz``.
3. Load comes from a second process (this script with ``--_loadgen``): the standard library's
   ``http.client`` on threads (lighter than httpx on the shared cores), keep-alive on, open loop
   at a fixed rate. Bodies are Meta-shaped text-message webhooks,
   signed with ``X-Hub-Signature-256`` over the exact bytes, built before the clock starts: unique
   wamid per message, ~1,000 customer phones (new leads and conversations first, then reuse),
   some bodies with 2-3 messages, and a fraction of exact re-deliveries of an earlier body (as
   Meta retries). Latency is measured from each request's *scheduled* send time, so a stalled
   server is not hidden by a stalled client (no coordinated omission).
4. After each run the database is checked: every wamid in a 200-acked body must be stored (lost),
   none more than once (duplicated), one lead per phone, one conversation per lead and number,
   and the conversations' unread counters must add up to the stored messages.
5. Cleanup: SIGTERM to the server and the worker (SIGKILL after a bounded wait), then the
   database is dropped unless ``--keep``.

Exit status: 0 ran and the data is intact (whether or not the latency target was met), 1 a
message was lost or duplicated (or another integrity check failed), 2 setup or environment error.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import math
import os
import queue
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness import BenchError, cloud_webhook_body, log_tail, meta_signature, run_cli, spawn

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtualenv this script runs in (.venv/bin)

HOST = "127.0.0.1"  # never anything else
PG_PORT = 5432
REDIS_PORT = 6379

TARGET_RPS = 400.0  # the goal: sustained, ack p99 <= 100 ms, nothing lost or duplicated
STRETCH_RPS = 1000.0
P99_LIMIT_MS = 100.0

WORKSPACE = "Bench"
ADMIN_EMAIL = "bench@example.com"
ADMIN_PASSWORD = "bench-password-not-a-secret"
APP_SECRET = "bench-app-secret"
VERIFY_TOKEN = "bench-verify-token"
PHONE_NUMBER_ID = "106540352242922"
DISPLAY_PHONE = "5511940000000"
WABA_ID = "102290129340398"
ACCESS_TOKEN = "bench-access-token"


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------------
# Load generator (the second process)
# ----------------------------------------------------------------------------------------------

FIRST_NAMES = (
    "Ana",
    "Bruno",
    "Camila",
    "Diego",
    "Eduarda",
    "Felipe",
    "Gabriela",
    "Henrique",
    "Isabela",
    "João",
    "Larissa",
    "Marcos",
    "Natália",
    "Otávio",
    "Patrícia",
    "Rafael",
    "Sofia",
    "Thiago",
    "Vitória",
    "Wagner",
)
LAST_NAMES = (
    "Silva",
    "Santos",
    "Oliveira",
    "Souza",
    "Rodrigues",
    "Ferreira",
    "Alves",
    "Pereira",
    "Lima",
    "Gomes",
)
TEXTS = (
    "Oi, tudo bem?",
    "Bom dia! Vocês abrem amanhã?",
    "Qual o valor do frete para Campinas?",
    "Quero saber se ainda tem o tamanho M disponível",
    "Obrigado!",
    "ok",
    "👍",
    "Pode me mandar o catálogo atualizado, por favor? Estou procurando algo para presente de "
    "aniversário, até uns 200 reais, de preferência com entrega ainda esta semana.",
    "Meu pedido 48213 ainda não chegou, o rastreio não atualiza desde segunda-feira. Consegue "
    "verificar com a transportadora? Preciso dele até sexta sem falta, é para um evento.",
    "Vocês aceitam Pix?",
    "Qual o horário de atendimento no sábado?",
    "Boa tarde, gostaria de remarcar meu horário para quinta às 15h se possível",
)


@dataclass
class LoadConfig:
    url: str
    app_secret: str
    rate: float
    seconds: float
    warmup: float
    connections: int
    dup_fraction: float
    multi_fraction: float
    phones: int
    phone_base: int  # a different block of phones per run: each run creates its own leads
    tag: str  # unique per run, inside every wamid
    seed: int
    timeout: float
    poisson: bool
    result_path: str


def _wamid(phone: str, tag: str, seq: int, rnd: random.Random) -> str:
    raw = f"{phone}:{tag}:{seq:08d}:{rnd.getrandbits(40):010x}".encode()
    return "wamid." + base64.b64encode(raw).decode()


def build_bodies(
    cfg: LoadConfig, n: int, offsets: Sequence[float]
) -> list[tuple[bytes, str, tuple[str, ...], bool]]:
    """``n`` (body, signature, wamids, is_redelivery) in send order; bodies are built up front so
    the generator spends its CPU on sending, not on JSON."""
    rnd = random.Random(cfg.seed)
    phones = [f"55119{cfg.phone_base + i:08d}" for i in range(cfg.phones)]
    names = {p: f"{rnd.choice(FIRST_NAMES)} {rnd.choice(LAST_NAMES)}" for p in phones}
    secret = cfg.app_secret.encode()
    base_ts = int(time.time())
    out: list[tuple[bytes, str, tuple[str, ...], bool]] = []
    originals: list[int] = []
    seq = 0
    for i in range(n):
        # Meta retries a delivery it got no 200 for, seconds to minutes later: resend the exact
        # bytes of a body sent at least ~0.25 s earlier (concurrent duplicates happen too, rarely).
        lag = max(1, int(cfg.rate * 0.25))
        if originals and rnd.random() < cfg.dup_fraction and len(originals) > lag:
            j = originals[rnd.randrange(max(0, len(originals) - max(2000, lag + 1)), len(originals) - lag)]
            body, sig, wamids, _ = out[j]
            out.append((body, sig, wamids, True))
            continue
        r = rnd.random()
        count = 1 if r >= cfg.multi_fraction else (2 if r < cfg.multi_fraction * 0.75 else 3)
        first = rnd.choice(phones)
        ts = base_ts + int(offsets[i])
        messages: list[dict[str, Any]] = []
        contacts: dict[str, dict[str, Any]] = {}
        for k in range(count):
            phone = first if k == 0 or rnd.random() < 0.6 else rnd.choice(phones)
            seq += 1
            messages.append(
                {
                    "from": phone,
                    "id": _wamid(phone, cfg.tag, seq, rnd),
                    "timestamp": str(ts),
                    "type": "text",
                    "text": {"body": rnd.choice(TEXTS)},
                }
            )
            contacts[phone] = {"profile": {"name": names[phone]}, "wa_id": phone}
        body = cloud_webhook_body(WABA_ID, PHONE_NUMBER_ID, DISPLAY_PHONE, list(contacts.values()), messages)
        sig = meta_signature(secret, body)
        originals.append(i)
        out.append((body, sig, tuple(m["id"] for m in messages), False))
    return out


def loadgen_main(config_path: str) -> int:
    cfg = LoadConfig(**json.loads(Path(config_path).read_text()))
    rnd = random.Random(cfg.seed + 1)
    total = cfg.warmup + cfg.seconds
    n = max(1, round(cfg.rate * total))
    if cfg.poisson:
        offsets, t = [], 0.0
        for _ in range(n):
            offsets.append(t)
            t += rnd.expovariate(cfg.rate)
    else:
        offsets = [i / cfg.rate for i in range(n)]
    measured_from = next((i for i, off in enumerate(offsets) if off >= cfg.warmup), n)
    bodies = build_bodies(cfg, n, offsets)

    status = [0] * n  # 0 unsent; -1 timeout; -2 transport error; -3 expired before sending
    picked = [0.0] * n
    done = [0.0] * n
    work: queue.Queue[int | None] = queue.Queue()
    stop = threading.Event()

    target = urlsplit(cfg.url)
    path = target.path + (f"?{target.query}" if target.query else "")

    def sender() -> None:
        # The standard library's client: the generator shares the server's 2 cores, and a
        # heavier client (httpx took ~0.75 ms of CPU per request) eats into what is measured.
        conn: http.client.HTTPConnection | None = None
        while True:
            i = work.get()
            if i is None or stop.is_set():
                if conn is not None:
                    conn.close()
                return
            picked[i] = time.perf_counter()
            if picked[i] - sched[i] > cfg.timeout:
                # Already later than a caller would wait (the server is far behind): it
                # counts as a timeout without being sent, so an overloaded run ends in time.
                done[i], status[i] = picked[i], -3
                continue
            body, sig, _, _ = bodies[i]
            headers = {
                "Content-Type": "application/json",
                "X-Hub-Signature-256": sig,
                "User-Agent": "facebookexternalua",
            }
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(target.netloc, timeout=cfg.timeout)
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                code = response.status
                if response.will_close:
                    conn.close()
                    conn = None
            except TimeoutError:
                code = -1
            except (OSError, http.client.HTTPException):
                code = -2
            if code < 0 and conn is not None:
                conn.close()
                conn = None
            done[i] = time.perf_counter()
            status[i] = code

    sched: list[float] = []
    threads = [threading.Thread(target=sender, daemon=True, name=f"send-{k}") for k in range(cfg.connections)]
    for th in threads:
        th.start()
    print("READY", flush=True)

    t0 = time.perf_counter() + 0.2
    sched = [t0 + off for off in offsets]
    cpu_start: os.times_result | None = None
    for i in range(n):
        delay = t0 + offsets[i] - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if i == measured_from:
            cpu_start = os.times()
            print("START", flush=True)
        work.put(i)
    if cpu_start is None:
        cpu_start = os.times()
        print("START", flush=True)
    dispatch_end = time.perf_counter()
    for _ in threads:
        work.put(None)
    deadline = time.monotonic() + cfg.timeout + 10
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    stop.set()
    cpu_end = os.times()
    print("END", flush=True)

    measured = range(measured_from, n)
    lat_ms = [round((done[i] - sched[i]) * 1000, 3) if status[i] > 0 else None for i in measured]
    lag_ms = [round((picked[i] - sched[i]) * 1000, 3) if picked[i] else None for i in measured]
    acked: set[str] = set()
    attempted: set[str] = set()
    for i in range(n):
        if picked[i] and status[i] != -3:
            attempted.update(bodies[i][2])
        if status[i] == 200:
            acked.update(bodies[i][2])
    finished = [done[i] for i in measured if status[i] != 0]
    window = (max(finished) - sched[measured_from]) if finished else 0.0
    result = {
        "n_total": n,
        "n_measured": len(measured),
        "statuses": [status[i] for i in measured],
        "statuses_warmup_non200": sum(1 for i in range(measured_from) if status[i] != 200),
        "lat_ms": lat_ms,
        "lag_ms": lag_ms,
        "redelivery": [bodies[i][3] for i in measured],
        "messages": [len(bodies[i][2]) for i in measured],
        "window_s": window,
        "dispatch_s": dispatch_end - sched[measured_from] if measured_from < n else 0.0,
        "acked_wamids": sorted(acked),
        "attempted_wamids": sorted(attempted),
        "loadgen_cpu_s": (cpu_end.user + cpu_end.system) - (cpu_start.user + cpu_start.system),
    }
    Path(cfg.result_path).write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------------
# CPU accounting from /proc (who used the two cores during the measured window)
# ----------------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_ticks(pid: int, reaped: bool = False) -> int:
    """utime + stime of a process; with ``reaped`` also the CPU of its children that exited
    (PostgreSQL backends that closed, counted by the postmaster that reaped them)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks + (int(fields[13]) + int(fields[14]) if reaped else 0)
    except (OSError, IndexError, ValueError):
        return 0


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                kids += [int(x) for x in (task / "children").read_text().split()]
    except OSError:
        pass
    return kids


def _all_pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all cores, from /proc/stat."""
    try:
        parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts[:8]) - idle, sum(parts[:8])


def cpu_snapshot(web_pid: int | None, worker_pid: int | None) -> dict[str, int]:
    """CPU ticks so far of the server, the task worker, PostgreSQL (every database: backends that
    exited are counted through the postmaster) and Redis, plus the whole machine's."""
    snap = {"web": 0, "worker": 0, "pg": 0, "redis": 0}
    for key, pid in (("web", web_pid), ("worker", worker_pid)):
        if pid:
            snap[key] = _proc_ticks(pid, reaped=True) + sum(_proc_ticks(k) for k in _children(pid))
    for pid in _all_pids():
        comm = _comm(pid)
        if comm.startswith("postgres"):
            snap["pg"] += _proc_ticks(pid, reaped=not _comm(_ppid(pid)).startswith("postgres"))
        elif comm.startswith("redis-server"):
            snap["redis"] += _proc_ticks(pid)
    snap["busy"], snap["total"] = machine_busy_ticks()
    return snap


PROFILE_BUCKETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # (label, a frame the stack must contain, frames it must not contain)
    ("webhook view (receive_cloud), inclusive", "receive_cloud (", ()),
    ("  account lookup by webhook key", "account_by_webhook_key (", ()),
    ("  signature check (secret decryption + HMAC)", "check_signature (", ()),
    ("  JSON + payload parser", "parse_cloud_webhook (", ()),
    ("  ingest(): the transaction", "ingest (crm/whatsapp/inbound.py", ()),
    ("    upsert_lead (SELECT lead [+ INSERT + SELECT])", "upsert_lead (", ()),
    ("    conversation_for (INSERT .. ON CONFLICT + SELECT)", "conversation_for (", ()),
    (
        "    _store_message: SELECT stored?, INSERT message, 2 UPDATEs",
        "_store_message (",
        ("upsert_lead (", "conversation_for ("),
    ),
    ("    commit (+ after-commit Redis publish)", "Session.commit (", ()),
    ("  account re-SELECT after commit (expired attributes)", "_load_expired (", ("ingest (crm/",)),
    ("logging (anywhere: ingest summary + access log)", "Logger.info (", ()),
    ("pool checkout incl. pre-ping SELECT 1 (anywhere)", "_ConnectionFairy._checkout (", ()),
    ("request teardown (session.remove)", "do_teardown_appcontext (", ()),
)


def profile_summary(files: Sequence[Path]) -> list[str]:
    """Inclusive shares of GIL-holding samples (py-spy raw format) for the ingest path's parts,
    and self time by library."""
    total = 0
    inclusive = dict.fromkeys((b[0] for b in PROFILE_BUCKETS), 0)
    by_lib: dict[str, int] = {}
    for f in files:
        for line in f.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            for label, must, must_not in PROFILE_BUCKETS:
                if must in stack and not any(x in stack for x in must_not):
                    inclusive[label] += n
            leaf = stack.rsplit(";", 1)[-1]
            where = leaf[leaf.find("(") + 1 :].split(":")[0]
            lib = where.split("/")[0] if "/" in where else "python stdlib/other"
            by_lib[lib] = by_lib.get(lib, 0) + n
    if not total:
        return ["profile: no samples"]
    out = [f"profile: {total} GIL-holding samples; share of web-worker Python time"]
    out += [f"  {label:<62}{100 * n / total:6.1f}%" for label, n in inclusive.items()]
    out.append(
        "  self time by library: "
        + ", ".join(
            f"{lib} {100 * n / total:.0f}%" for lib, n in sorted(by_lib.items(), key=lambda kv: -kv[1])[:7]
        )
    )
    return out


# ----------------------------------------------------------------------------------------------
# The orchestrator
# ----------------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an unsorted sequence; NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


@dataclass
class RunResult:
    label: str
    target: float
    achieved_rps: float = 0.0
    msgs_per_s: float = 0.0
    p50: float = float("nan")
    p90: float = float("nan")
    p99: float = float("nan")
    max: float = float("nan")
    lag_p99: float = float("nan")
    requests: int = 0
    non200: int = 0
    non200_detail: dict[str, int] = field(default_factory=dict)
    redeliveries: int = 0
    multi_bodies: int = 0
    messages_acked: int = 0
    lost: int = 0
    duplicated: int = 0
    stored_unacked: int = 0
    dup_leads: int = 0
    dup_conversations: int = 0
    unread_drift: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    loadgen_cpu: float = 0.0
    pg_sessions: int = 0  # connections opened to the bench database during the run
    profile: list[str] = field(default_factory=list)  # --profile summary lines

    @property
    def intact(self) -> bool:
        return not (
            self.lost or self.duplicated or self.dup_leads or self.dup_conversations or self.unread_drift
        )

    @property
    def meets(self) -> bool:
        return (
            self.intact
            and self.non200 == 0
            and self.p99 <= P99_LIMIT_MS
            and self.achieved_rps >= 0.97 * self.target
        )


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.db_name: str = args.db_name
        self.redis_url = f"redis://{HOST}:{REDIS_PORT}/{args.redis_db}"
        self.db_url = f"postgresql+psycopg://postgres@{HOST}:{PG_PORT}/{self.db_name}"
        self.tmp = Path(tempfile.mkdtemp(prefix="zapdesk-bench-"))
        self.instance = self.tmp / "instance"
        self.instance.mkdir()
        self.port = 0
        self.web: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.webhook_path = ""
        self.account_id = 0
        self.db_created = False
        self.run_no = 0
        self._logs: list[Any] = []

    # -- environment ---------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "GRAPH_", "GEMINI_"))}
        env.update(
            {
                "FLASK_APP": "app.py",
                "DATABASE_URL": self.db_url,
                "REDIS_URL": self.redis_url,
                "SECRET_KEY": "bench",
                "CRM_INSTANCE_PATH": str(self.instance),
                "GRAPH_API_URL": f"http://{HOST}:9/v23.0",  # nothing is sent out; if it were, it stays local
                "LOG_LEVEL": self.args.log_level,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.pop("ENCRYPTION_KEY", None)
        return env

    def pg_admin(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(
                host=HOST,
                port=PG_PORT,
                user="postgres",
                dbname="postgres",
                connect_timeout=5,
                autocommit=True,
            )
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BenchError(
                f"PostgreSQL at {HOST}:{PG_PORT} (user postgres, trust auth) is not reachable: {first}. "
                "Start it and retry."
            ) from exc

    def pg_bench(self, **options: Any) -> Any:
        """A connection to the bench database; ``options`` go to psycopg.connect."""
        import psycopg

        return psycopg.connect(
            host=HOST,
            port=PG_PORT,
            user="postgres",
            dbname=self.db_name,
            connect_timeout=5,
            autocommit=True,
            **options,
        )

    def preflight(self) -> None:
        import redis

        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.db_name) or "bench" not in self.db_name:
            raise BenchError(
                f"--db-name {self.db_name!r}: use a lowercase name containing 'bench' (it is dropped)"
            )
        for tool in ("gunicorn", "flask"):
            if not (BIN / tool).exists():
                raise BenchError(
                    f"{BIN / tool} not found: run this script with the project's .venv/bin/python"
                )
        with self.pg_admin() as conn:
            conn.execute("SELECT 1")
        try:
            client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=3, socket_timeout=5)
            client.ping()
        except redis.RedisError as exc:
            raise BenchError(
                f"Redis at {HOST}:{REDIS_PORT} is not reachable: {str(exc).rstrip('.')}. Start it and retry."
            ) from exc

    def run_cli(self, *argv: str, timeout: float = 120) -> str:
        return run_cli(argv, self.env(), timeout)

    # -- setup ---------------------------------------------------------------------------------
    def fresh_workspace(self) -> None:
        """A new, migrated database with the bench workspace and its owner; Redis db flushed."""
        import redis

        log(f"setup: database {self.db_name}, Redis db {self.args.redis_db}, instance {self.instance}")
        with self.pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.db_created = True
        redis.Redis.from_url(self.redis_url, socket_connect_timeout=3, socket_timeout=10).flushdb()
        self.run_cli("db", "upgrade", timeout=180)
        self.run_cli(
            "crm",
            "create-admin",
            "--workspace",
            WORKSPACE,
            "--email",
            ADMIN_EMAIL,
            "--password",
            ADMIN_PASSWORD,
        )

    def add_number(self, *options: str) -> int:
        out = self.run_cli("crm", "add-account", "--workspace", WORKSPACE, *options)
        try:
            return int(json.loads(out.strip().splitlines()[-1])["account_id"])
        except (ValueError, KeyError, IndexError) as exc:
            raise BenchError(f"add-account printed no account id: {out!r}") from exc

    def setup(self) -> None:
        self.fresh_workspace()
        out = self.run_cli(
            "crm",
            "add-account",
            "--workspace",
            WORKSPACE,
            "--provider",
            "cloud",
            "--name",
            "Bench Cloud number",
            "--phone-number-id",
            PHONE_NUMBER_ID,
            "--access-token",
            ACCESS_TOKEN,
            "--app-secret",
            APP_SECRET,
            "--verify-token",
            VERIFY_TOKEN,
            "--waba-id",
            WABA_ID,
        )
        try:
            info = json.loads(out.strip().splitlines()[-1])
            self.webhook_path, self.account_id = info["webhook_path"], int(info["account_id"])
        except (ValueError, KeyError, IndexError) as exc:
            raise BenchError(f"add-account printed no webhook_path: {out!r}") from exc
        log(f"setup: account {self.account_id}, webhook {self.webhook_path[:24]}…")

    def _free_port(self) -> int:
        with socket.socket() as s:
            s.bind((HOST, 0))
            return int(s.getsockname()[1])

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        return spawn(self.tmp, name, cmd, self.env(), self._logs)

    def _log_tail(self, name: str, lines: int = 15) -> str:
        return log_tail(self.tmp, name, lines)

    def start(self) -> None:
        import httpx

        self.worker = self._spawn("worker", [str(BIN / "flask"), "crm", "worker"])
        for attempt in range(3):  # a port picked free can be taken before gunicorn binds it
            self.port = self._free_port()
            cmd = [
                str(BIN / "gunicorn"),
                "-k",
                "gthread",
                "--threads",
                str(self.args.threads),
                "-w",
                str(self.args.workers),
                "-b",
                f"{HOST}:{self.port}",
                *(["--pythonpath", str(self.args.pythonpath)] if self.args.pythonpath else []),
                self.args.app,
            ]
            log("server: " + " ".join(cmd[1:]).replace(str(BIN) + "/", ""))
            self.web = self._spawn("gunicorn", cmd)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self.web.poll() is None:
                try:
                    if httpx.get(f"http://{HOST}:{self.port}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            else:
                if self.web.poll() is not None and attempt < 2 and "in use" in self._log_tail("gunicorn"):
                    continue
                raise BenchError(
                    "gunicorn did not answer /healthz within 60 s:\n" + self._log_tail("gunicorn")
                )
            break
        assert self.web is not None
        # all N workers up (each answers healthz once it has imported the app)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_children(self.web.pid)) < self.args.workers:
            time.sleep(0.2)
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and b'"worker": "started"' not in (self.tmp / "worker.log").read_bytes()
        ):
            if self.worker.poll() is not None:
                raise BenchError("flask crm worker exited:\n" + self._log_tail("worker"))
            time.sleep(0.2)
        self.check_ready()
        log(
            f"server: up on {self.base} (web pid {self.web.pid}, workers {_children(self.web.pid)}; "
            f"task worker pid {self.worker.pid})"
        )

    def check_ready(self) -> None:
        """What this benchmark needs of the running server (here: the webhook verifies)."""
        import httpx

        verify = httpx.get(
            f"{self.base}{self.webhook_path}",
            params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"},
            timeout=5,
        )
        if verify.status_code != 200 or verify.text != "42":
            raise BenchError(f"webhook verification failed: {verify.status_code} {verify.text[:200]}")

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    # -- one run -------------------------------------------------------------------------------
    def run(self, rate: float, seconds: float, label: str, profile_dir: Path | None = None) -> RunResult:
        self.run_no += 1
        cfg = LoadConfig(
            url=f"{self.base}{self.webhook_path}",
            app_secret=APP_SECRET,
            rate=rate,
            seconds=seconds,
            warmup=self.args.warmup,
            connections=self.args.connections,
            dup_fraction=self.args.dup_fraction,
            multi_fraction=self.args.multi_fraction,
            phones=self.args.phones,
            phone_base=self.run_no * 100_000,
            tag=f"r{self.run_no}",
            seed=self.args.seed + self.run_no,
            timeout=self.args.request_timeout,
            poisson=self.args.poisson,
            result_path=str(self.tmp / f"run{self.run_no}.json"),
        )
        cfg_path = self.tmp / f"run{self.run_no}.cfg.json"
        cfg_path.write_text(json.dumps(vars(cfg)))
        errlog = open(self.tmp / f"loadgen{self.run_no}.log", "wb")  # noqa: SIM115
        self._logs.append(errlog)
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--_loadgen", str(cfg_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=errlog,
            start_new_session=True,
        )
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                lines.put(raw.decode(errors="replace").strip())
            lines.put("EOF")

        threading.Thread(target=pump, daemon=True).start()

        def expect(word: str, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
                except queue.Empty:
                    line = ""
                if line == word:
                    return
                if line == "EOF" or time.monotonic() >= deadline:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(10)
                    tail = (self.tmp / f"loadgen{self.run_no}.log").read_text(errors="replace")[-2000:]
                    raise BenchError(f"load generator: no {word} within {timeout:.0f} s\n{tail}")

        spies: list[subprocess.Popen[bytes]] = []
        try:
            expect("READY", 120)
            expect("START", self.args.warmup + 10)
            sessions_before = self._pg_sessions()
            before = cpu_snapshot(
                self.web.pid if self.web else None, self.worker.pid if self.worker else None
            )
            if profile_dir is not None:
                spies = self._start_profiles(profile_dir, seconds)
            expect("END", seconds + self.args.request_timeout + 30)
            after = cpu_snapshot(self.web.pid if self.web else None, self.worker.pid if self.worker else None)
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            for spy in spies:
                try:
                    spy.wait(seconds + 30)
                except subprocess.TimeoutExpired:
                    spy.kill()
        if proc.returncode != 0:
            tail = (self.tmp / f"loadgen{self.run_no}.log").read_text(errors="replace")[-2000:]
            raise BenchError(f"load generator exited {proc.returncode}\n{tail}")
        data = json.loads(Path(cfg.result_path).read_text())
        res = self._summarise(label, rate, data)
        wall = max(1e-9, (after["total"] - before["total"]) / CLK_TCK / (os.cpu_count() or 1))
        for key in ("web", "worker", "pg", "redis"):
            res.cpu[key] = (after[key] - before[key]) / CLK_TCK / wall  # cores used on average
        res.cpu["machine"] = (after["busy"] - before["busy"]) / CLK_TCK / wall
        answered = max(1, sum(1 for st in data["statuses"] if st > 0))
        for key in ("web", "pg"):  # CPU milliseconds per answered request
            res.cpu[f"{key}_ms_per_req"] = (after[key] - before[key]) / CLK_TCK * 1000 / answered
        res.loadgen_cpu = data["loadgen_cpu_s"] / max(1e-9, data["window_s"])
        res.cpu["other"] = max(
            0.0,
            res.cpu["machine"] - res.loadgen_cpu - sum(res.cpu[k] for k in ("web", "worker", "pg", "redis")),
        )
        time.sleep(0.6)  # PostgreSQL flushes its session counters about once a second
        res.pg_sessions = self._pg_sessions() - sessions_before
        self._verify(res, data)
        if profile_dir is not None and spies:
            res.profile = profile_summary(sorted(profile_dir.glob("web-*.txt")))
        return res

    def _pg_sessions(self) -> int:
        with self.pg_admin() as conn:
            row = conn.execute(
                "SELECT coalesce(sessions, 0) FROM pg_stat_database WHERE datname = %s", (self.db_name,)
            ).fetchone()
        return int(row[0]) if row else 0

    def _start_profiles(self, out_dir: Path, seconds: float) -> list[subprocess.Popen[bytes]]:
        spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
        if spy is None or self.web is None:
            log("profile: py-spy not found (pip install py-spy into the venv); skipped")
            return []
        out_dir.mkdir(parents=True, exist_ok=True)
        procs = []
        for pid in _children(self.web.pid):
            out = out_dir / f"web-{pid}.txt"
            procs.append(
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(int(seconds)),
                        "--rate",
                        "250",
                        "--format",
                        "raw",
                        "--output",
                        str(out),
                        "--nonblocking",
                        "--gil",  # only the thread holding the GIL: where the interpreter's CPU goes
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        log(f"profile: py-spy recording {len(procs)} web workers into {out_dir}")
        return procs

    def _summarise(self, label: str, rate: float, data: dict[str, Any]) -> RunResult:
        res = RunResult(label=label, target=rate)
        statuses: list[int] = data["statuses"]
        res.requests = len(statuses)
        all_lat = [lat for lat in data["lat_ms"] if lat is not None]
        unfinished = sum(1 for st in statuses if st in (0, -1, -2, -3))
        # Latency over every answered request; an unanswered one counts as the request timeout.
        lat = all_lat + [self.args.request_timeout * 1000.0] * unfinished
        res.p50, res.p90, res.p99 = pct(lat, 50), pct(lat, 90), pct(lat, 99)
        res.max = max(lat) if lat else float("nan")
        res.lag_p99 = pct([x for x in data["lag_ms"] if x is not None], 99)
        detail: dict[str, int] = {}
        for st in statuses:
            if st != 200:
                name = {0: "unsent", -1: "timeout", -2: "conn-error", -3: "expired-in-client"}.get(
                    st, str(st)
                )
                detail[name] = detail.get(name, 0) + 1
        res.non200, res.non200_detail = sum(detail.values()) + data["statuses_warmup_non200"], detail
        if data["statuses_warmup_non200"]:
            detail["warmup"] = data["statuses_warmup_non200"]
        window = data["window_s"] or float("nan")
        res.achieved_rps = sum(1 for st in statuses if st == 200) / window  # acked, not just answered
        new_msgs = sum(
            m
            for m, st, dup in zip(data["messages"], statuses, data["redelivery"], strict=True)
            if st == 200 and not dup
        )
        res.msgs_per_s = new_msgs / window
        res.redeliveries = sum(data["redelivery"])
        res.multi_bodies = sum(1 for m in data["messages"] if m > 1)
        res.messages_acked = len(data["acked_wamids"])
        return res

    def _verify(self, res: RunResult, data: dict[str, Any]) -> None:
        acked = set(data["acked_wamids"])
        attempted = set(data["attempted_wamids"])
        with self.pg_bench() as conn:
            conn.execute("SET statement_timeout = '60s'")
            stored: dict[str, int] = dict(
                conn.execute(
                    "SELECT provider_message_id, count(*) FROM messages WHERE account_id = %s GROUP BY 1",
                    (self.account_id,),
                ).fetchall()
            )
            res.lost = len(acked - stored.keys())
            res.duplicated = sum(1 for c in stored.values() if c > 1)
            res.stored_unacked = len((attempted - acked) & stored.keys())
            res.dup_leads = conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM leads WHERE phone IS NOT NULL "
                "GROUP BY workspace_id, phone HAVING count(*) > 1) d"
            ).fetchone()[0]
            res.dup_conversations = conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM conversations"
                " GROUP BY account_id, lead_id HAVING count(*) > 1) d"
            ).fetchone()[0]
            drift_sql = (
                "SELECT (SELECT coalesce(sum(unread_count), 0) FROM conversations)"
                " - (SELECT count(*) FROM messages WHERE direction = 'in')"
            )
            for _ in range(5):  # a request the client gave up on may still be committing
                res.unread_drift = int(conn.execute(drift_sql).fetchone()[0])
                if res.unread_drift == 0:
                    break
                time.sleep(1)

    # -- cleanup -------------------------------------------------------------------------------
    def _stop(self, proc: subprocess.Popen[bytes] | None, name: str, grace: float) -> None:
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log(f"cleanup: {name} (pid {proc.pid}) ignored SIGTERM for {grace:.0f} s; SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the process and its children only
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def drive(self, script: str, body: Callable[[], int]) -> int:
        """Set up, start the server, run ``body`` (its exit status), always clean up; a
        ``BenchError`` is one clear line and status 2."""
        try:
            self.preflight()
            self.setup()
            self.start()
            return body()
        except BenchError as exc:
            print(f"{script}: {exc}", file=sys.stderr)
            return 2
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        self._stop(self.web, "gunicorn", 35)
        self._stop(self.worker, "worker", 20)
        for fh in self._logs:
            with contextlib.suppress(OSError):
                fh.close()
        if self.db_created and not self.args.keep:
            try:
                with self.pg_admin() as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
                import redis

                redis.Redis.from_url(self.redis_url, socket_connect_timeout=3, socket_timeout=10).flushdb()
            except Exception as exc:  # cleanup is best effort, and says so
                log(f"cleanup: could not drop {self.db_name}: {exc}")
        if self.args.keep:
            log(f"kept: database {self.db_name}, logs in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------

HEADER = (
    f"{'run':<10}{'target':>7}{'req/s':>8}{'msg/s':>8}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}"
    f"{'non200':>7}{'lost':>5}{'dup':>4}  {'lag99':>6}  cpu: web/pg/redis/wrk/gen/other (cores)"
)


def row(r: RunResult) -> str:
    c = r.cpu
    cpu = "/".join(
        f"{v:.2f}"
        for v in (
            c.get("web", 0),
            c.get("pg", 0),
            c.get("redis", 0),
            c.get("worker", 0),
            r.loadgen_cpu,
            c.get("other", 0),
        )
    )
    return (
        f"{r.label:<10}{r.target:>7.0f}{r.achieved_rps:>8.1f}{r.msgs_per_s:>8.1f}{r.p50:>8.1f}{r.p90:>8.1f}"
        f"{r.p99:>8.1f}{r.max:>8.1f}{r.non200:>7}{r.lost:>5}{r.duplicated:>4}  {r.lag_p99:>6.1f}  {cpu}"
    )


def describe(r: RunResult) -> str:
    extra = []
    if r.non200_detail:
        extra.append("non-200: " + ", ".join(f"{k}={v}" for k, v in sorted(r.non200_detail.items())))
    extra.append(
        f"{r.requests} requests ({r.redeliveries} re-deliveries, {r.multi_bodies} with 2-3 messages), "
        f"{r.messages_acked} unique wamids acked, {r.stored_unacked} stored without a 200; CPU per "
        f"request: web {r.cpu.get('web_ms_per_req', 0):.1f} ms, "
        f"PostgreSQL {r.cpu.get('pg_ms_per_req', 0):.1f} ms; {r.pg_sessions} new PostgreSQL sessions"
    )
    if r.dup_leads or r.dup_conversations or r.unread_drift:
        extra.append(
            f"INTEGRITY: dup leads {r.dup_leads}, dup conversations {r.dup_conversations}, "
            f"unread drift {r.unread_drift}"
        )
    return "\n".join(["          " + "; ".join(extra), *r.profile])


def median_row(results: list[RunResult]) -> RunResult:
    m = RunResult(label="median", target=results[0].target)
    for name in (
        "achieved_rps",
        "msgs_per_s",
        "p50",
        "p90",
        "p99",
        "max",
        "lag_p99",
        "loadgen_cpu",
        "pg_sessions",
    ):
        setattr(m, name, statistics.median(getattr(r, name) for r in results))
    for name in ("non200", "lost", "duplicated", "dup_leads", "dup_conversations", "unread_drift"):
        setattr(m, name, sum(getattr(r, name) for r in results))  # totals: any is a failure
    for key in results[0].cpu:
        m.cpu[key] = statistics.median(r.cpu.get(key, 0.0) for r in results)
    return m


def verdict(m: RunResult) -> str:
    if m.target < TARGET_RPS:
        ok = f"NOT TESTED (ran at {m.target:.0f} req/s)"
    else:
        ok = "MET" if m.meets and m.achieved_rps >= 0.97 * TARGET_RPS else "NOT MET"
    return (
        f"target {TARGET_RPS:.0f} req/s sustained, ack p99 <= {P99_LIMIT_MS:.0f} ms, "
        f"0 lost / 0 duplicated: {ok} "
        f"(achieved {m.achieved_rps:.1f} req/s = {m.achieved_rps / TARGET_RPS:.2f}x of {TARGET_RPS:.0f}, "
        f"{m.achieved_rps / STRETCH_RPS:.2f}x of the {STRETCH_RPS:.0f} stretch; p99 {m.p99:.1f} ms; "
        f"non-200 {m.non200}; lost {m.lost}; duplicated {m.duplicated})"
    )


# ----------------------------------------------------------------------------------------------


def find_max(bench: Bench, args: argparse.Namespace, results: list[RunResult]) -> None:
    """Step the rate up until a step fails, then bisect ``--refine`` times between the last
    passing and the first failing rate. A step passes with p99 <= 100 ms, every request answered
    200, at least 97% of the target rate achieved and the data intact."""

    def step(rate: float) -> tuple[RunResult, bool]:
        runs = []
        for k in range(args.repeat):
            profile = args.profile if (args.profile and not results) else None
            r = bench.run(rate, args.step_seconds, f"{rate:.0f}#{k + 1}", profile)
            results.append(r)
            runs.append(r)
            log(row(r))
            log(describe(r))
        m = median_row(runs) if len(runs) > 1 else runs[0]
        if len(runs) > 1:
            log(row(m))
        why = []
        if not m.intact:
            why.append("DATA INTEGRITY FAILURE")
        if m.p99 > P99_LIMIT_MS:
            why.append(f"p99 {m.p99:.1f} ms > {P99_LIMIT_MS:.0f}")
        if m.non200:
            why.append(f"{m.non200} non-200")
        if m.achieved_rps < 0.97 * rate:
            why.append(f"achieved {m.achieved_rps:.1f} < 97% of target")
        log(f"step {rate:.0f}: {'fails (' + '; '.join(why) + ')' if why else 'passes'}")
        return m, not why

    best: RunResult | None = None
    failed: float | None = None
    rate = args.start
    while rate <= args.max_rate:
        m, ok = step(rate)
        if not m.intact:
            return
        if not ok:
            failed = rate
            break
        best = m
        rate += args.step
    low = best.target if best else 0.0
    for _ in range(args.refine if failed is not None else 0):
        mid = round((low + failed) / 2 / 10) * 10 if failed is not None else 0.0
        if mid <= low or failed is None or mid >= failed:
            break
        m, ok = step(mid)
        if not m.intact:
            return
        if ok:
            best, low = m, mid
        else:
            failed = mid
    log("")
    if best is None:
        log(f"find-max: not even {args.start:.0f} req/s met p99 <= {P99_LIMIT_MS:.0f} ms without errors")
        return
    log(
        f"find-max: highest passing rate {best.target:.0f} req/s"
        + (f" (first failing {failed:.0f})" if failed is not None else "")
        + f": achieved {best.achieved_rps:.1f} req/s, {best.msgs_per_s:.1f} msg/s, p99 {best.p99:.1f} ms"
        f" = {best.achieved_rps / TARGET_RPS:.2f}x the {TARGET_RPS:.0f} req/s target,"
        f" {best.achieved_rps / STRETCH_RPS:.2f}x the {STRETCH_RPS:.0f} stretch"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark the Cloud API webhook ingest path on the real server (see the docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=float, default=TARGET_RPS, help="open-loop target, requests/s")
    mode.add_argument("--find-max", action="store_true", help="step the rate up until p99 > 100 ms or errors")
    p.add_argument("--seconds", type=float, default=30.0, help="measured seconds per run")
    p.add_argument(
        "--warmup",
        type=float,
        default=10.0,
        help="seconds at the same rate before measuring (verified, not timed): long enough for every "
        "customer phone to have written once, so the runs measure the steady state",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per rate; medians are reported (default 3; 1 per step with --find-max)",
    )
    p.add_argument("--start", type=float, default=200.0, help="--find-max: first rate")
    p.add_argument("--step", type=float, default=200.0, help="--find-max: rate increment")
    p.add_argument("--max-rate", type=float, default=3000.0, help="--find-max: stop here")
    p.add_argument("--refine", type=int, default=2, help="--find-max: bisections after the first failure")
    p.add_argument("--step-seconds", type=float, default=20.0, help="--find-max: measured seconds per step")
    p.add_argument("--workers", "-w", type=int, default=2, help="gunicorn worker processes")
    p.add_argument("--threads", type=int, default=16, help="gunicorn threads per worker")
    p.add_argument(
        "--app", default="wsgi:app", help="gunicorn app (for experiments; the product is wsgi:app)"
    )
    p.add_argument("--pythonpath", type=Path, default=None, help="extra gunicorn --pythonpath (for --app)")
    p.add_argument(
        "--connections", type=int, default=64, help="load generator: keep-alive connections (one thread each)"
    )
    p.add_argument(
        "--dup-fraction",
        type=float,
        default=0.05,
        help="fraction of requests that re-deliver an earlier body",
    )
    p.add_argument("--multi-fraction", type=float, default=0.10, help="fraction of bodies with 2-3 messages")
    p.add_argument("--phones", type=int, default=1000, help="distinct customer phones per run")
    p.add_argument("--poisson", action="store_true", help="Poisson arrivals instead of evenly spaced ones")
    p.add_argument(
        "--request-timeout", type=float, default=10.0, help="seconds before a request counts as timed out"
    )
    p.add_argument("--seed", type=int, default=20250101)
    p.add_argument("--db-name", default="zapdesk_bench", help="throwaway database (dropped and recreated)")
    p.add_argument("--redis-db", type=int, default=14, help="Redis database number (flushed)")
    p.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the server (INFO: as shipped)")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="record the web workers with py-spy --gil during the first run and print where the time goes",
    )
    p.add_argument("--keep", action="store_true", help="keep the database and the logs")
    p.add_argument("--_loadgen", metavar="CONFIG", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.find_max else 3
    for name in ("seconds", "warmup", "step_seconds", "request_timeout"):
        if not 0 <= getattr(args, name) <= 600:
            p.error(f"--{name.replace('_', '-')} must be between 0 and 600")
    if not 0 <= args.refine <= 6:
        p.error("--refine 0..6")
    if not 1 <= args.repeat <= 20 or not 1 <= args.workers <= 32 or not 1 <= args.connections <= 1000:
        p.error("--repeat 1..20, --workers 1..32, --connections 1..1000")
    if not 0 <= args.dup_fraction < 1 or not 0 <= args.multi_fraction <= 1 or args.phones < 1:
        p.error("--dup-fraction in [0, 1), --multi-fraction in [0, 1], --phones >= 1")
    if args.rate <= 0 or args.start <= 0 or args.step <= 0:
        p.error("rates must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args._loadgen:
        return loadgen_main(args._loadgen)

    bench = Bench(args)

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    results: list[RunResult] = []
    try:
        bench.preflight()
        bench.setup()
        bench.start()
        log(
            f"load: {args.connections} keep-alive connections, {args.dup_fraction:.0%} re-deliveries, "
            f"{args.multi_fraction:.0%} bodies with 2-3 messages, {args.phones} phones per run, "
            f"{'Poisson' if args.poisson else 'evenly spaced'} arrivals, {args.warmup:.0f} s warm-up per run"
        )
        log(
            f"machine: {os.cpu_count()} cores; latency in ms from the scheduled send time; lag99 = load "
            f"generator behind schedule (p99, ms)\n"
        )
        log(HEADER)
        if args.find_max:
            find_max(bench, args, results)
        else:
            for k in range(args.repeat):
                r = bench.run(args.rate, args.seconds, f"run {k + 1}", args.profile if k == 0 else None)
                results.append(r)
                log(row(r))
                log(describe(r))
            m = median_row(results)
            log("-" * len(HEADER))
            log(row(m))
            log("")
            log(f"medians of {len(results)} runs at {args.rate:.0f} req/s: {verdict(m)}")
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        bench.cleanup()
        log(f"total time {time.monotonic() - started:.0f} s")
    lost = sum(r.lost for r in results)
    duplicated = sum(r.duplicated for r in results)
    other = sum(r.dup_leads + r.dup_conversations + abs(r.unread_drift) for r in results)
    if lost or duplicated or other:
        log(f"FAIL: lost {lost}, duplicated {duplicated}, other integrity problems {other}")
        return 1
    log("data check: every 200-acked message stored exactly once (0 lost, 0 duplicated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
