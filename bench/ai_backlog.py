#!/usr/bin/env python3
"""Benchmark: a backlog of 1,000 AI replies with Gemini answering 30% 429s, while ordinary sends go on.

    .venv/bin/python bench/ai_backlog.py                     # 1,000 customers at 50/s, API sends at 5/s
    .venv/bin/python bench/ai_backlog.py --repeat 3          # 3 runs (each on a fresh database), medians
    .venv/bin/python bench/ai_backlog.py --latency 1         # Gemini taking 1 s per answer
    .venv/bin/python bench/ai_backlog.py --messages 200      # a quick look

What it does, all on 127.0.0.1:

1. Setup: drops and recreates the PostgreSQL database ``bench_ai``, flushes Redis db 11, runs
   ``flask db upgrade``, ``flask crm create-admin``, ``flask crm create-token``. It starts, on
   threads of this process, the Graph API emulator (``tests/fakes/graph_api.py``, throughput 80/s
   like Meta) and the Gemini stub (``tests/fakes/gemini.py``): a real HTTP server reached by the
   worker through the google-genai SDK (``GEMINI_BASE_URL``), answering a seeded random 30% of the
   calls with the per-minute 429 (RetryInfo ``retryDelay`` 2s) and the others with the JSON the
   product asks for (``{"reply": ..., "handoff": false}``). It adds one Cloud API number whose
   ``graph_url`` is the emulator and turns AI replies on with ``flask crm set-ai`` and a budget
   (default 900 requests per minute, 100,000 per day) and a short knowledge text.
2. Starts the product in scaled mode: ``gunicorn -k gthread -w 2 --threads 16 wsgi:app`` and
   ``--workers`` x ``flask crm worker`` (WORKER_THREADS send threads, AI_WORKER_THREADS threads on
   the separate AI queue), and waits for ``/healthz`` and the workers' start line.
3. Load, open loop from threads of this process (``http.client``, keep-alive):
   - ``--messages`` signed Meta webhooks at ``--rate`` per second, one text message each from its own
     customer phone (so every message is owed its own answer; the debounce merges only messages of
     one conversation). Every question is different (no answer-cache hits) and none contains a
     hand-off or consent keyword;
   - ``POST /api/v1/messages`` at ``--api-rate`` per second to other phones (one each), from the
     first webhook until every AI reply is settled: the ordinary sends that must not wait behind
     the AI backlog.
4. Waits until every ``ai_replies`` row is settled and the outbox holds nothing queued or sending
   (``--settle-timeout``), printing progress every 15 s, then checks, from PostgreSQL and the
   emulators:
   - send-queue wait of each API send: from its 202 to the moment the Graph emulator accepted it
     (both on this process's monotonic clock); p50 / p95 / max; target p95 <= 1 s;
   - lost: an inbound message with no reply (no outbox row keyed ``ai:<message id>``, or its
     customer's phone never accepted by the emulator); target 0;
   - duplicates: an idempotency key used twice, a conversation with two AI/fallback replies, or a
     customer phone accepted twice by the emulator; target 0;
   - the budget at the stub's side: the most calls that arrived within any rolling 60 s, against
     ``per_minute`` (and all calls against ``per_day``); target 0 calls above. The same from the
     ``ai_calls`` table;
   - AI answers vs fallbacks (and why), attempts, calls and 429s served, the AI reply latency
     (webhook acknowledged → reply accepted by the emulator, so it includes the 3 s debounce), and
     the CPU of the web server, the workers, PostgreSQL and this process.
5. Cleanup (also on Ctrl-C, SIGTERM or an error): SIGTERM to the server and the workers (SIGKILL to
   their process group after a bounded wait), the database dropped and Redis db 11 flushed unless
   ``--keep``.

Exit status: 0 when every target is met in every run, 1 when one is missed (wait p95, a lost or
duplicated reply, a call above the budget, an API send never accepted), 2 for a setup or
environment problem (PostgreSQL or Redis down, a process that died, a backlog not settled in time).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness import (
    HOST,
    PG_PORT,
    BenchError,
    cloud_webhook_body,
    log_tail,
    meta_signature,
    pg_connect,
    redis_client,
    run_cli,
    spawn,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent  # the virtualenv this script runs in (.venv/bin)

REDIS_PORT = 6379

TARGET_WAIT_P95_S = 1.0

WORKSPACE = "Bench"
ADMIN_EMAIL = "bench@example.com"
ADMIN_PASSWORD = "bench-password-not-a-secret"
APP_SECRET = "bench-app-secret"
VERIFY_TOKEN = "bench-verify-token"
PHONE_NUMBER_ID = "106540352242922"
DISPLAY_PHONE = "5511940000000"
WABA_ID = "102290129340398"
ACCESS_TOKEN = "bench-access-token"
GEMINI_KEY = "bench-gemini-key"
SECRET_KEY = "bench-ai-backlog-secret-key"
FINAL = ("answered", "fallback", "handoff", "skipped", "superseded")

KNOWLEDGE = """Loja Bench — roupas e presentes.
Horário: segunda a sexta 9h às 18h, sábado 9h às 13h. Entregas em São Paulo em 1 dia útil, outras
capitais em 3 a 5 dias úteis; frete grátis acima de R$ 199. Pagamento: Pix, cartão em até 6x sem
juros, boleto. Trocas em até 30 dias com a etiqueta. Tamanhos P, M, G e GG.
"""
QUESTIONS = (
    "Bom dia! Vocês têm o modelo {n} no tamanho {size}? Quanto fica o frete para {city}?",
    "Oi, o pedido {n} já foi enviado? Comprei na semana passada e queria saber o prazo para {city}.",
    "Boa tarde, posso pagar o produto {n} em {k} vezes no cartão? E tem no tamanho {size}?",
    "Olá! Vocês abrem no sábado? Queria buscar o pedido {n} na loja, moro em {city}.",
    "Quanto custa o frete do item {n} para {city}? Preciso receber em até {k} dias.",
)
CITIES = ("Campinas", "Santos", "Curitiba", "Recife", "Niterói", "Salvador", "Goiânia", "Belém")
SIZES = ("P", "M", "G", "GG")


def log(msg: str) -> None:
    print(f"[ai_backlog] {msg}", flush=True)


def customer_phone(n: int) -> str:
    """The n-th customer who writes (Meta's ``wa_id``: digits, no "+")."""
    return f"551198{n + 1_000_000:07d}"


def api_phone(n: int) -> str:
    """The n-th phone the API sends to (another block: never one of the customers)."""
    return f"552198{n + 1_000_000:07d}"


def question(n: int) -> str:
    rnd = random.Random(n)
    template = QUESTIONS[n % len(QUESTIONS)]
    return template.format(n=48_000 + n, size=rnd.choice(SIZES), city=rnd.choice(CITIES), k=rnd.randint(2, 6))


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[min(len(ordered), int(rank)) - 1]


def above(times: Sequence[float], window: float, limit: int) -> int:
    """Events that arrived when ``limit`` had already arrived less than ``window`` before them."""
    count = start = 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        count += end - start + 1 > limit
    return count


def max_in_window(times: Sequence[float], window: float) -> int:
    """The most events less than ``window`` apart (``times`` sorted), as the Gemini stub counts."""
    best = start = 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


# ----------------------------------------------------------------------------------------------
# Open-loop load from threads of this process
# ----------------------------------------------------------------------------------------------


@dataclass
class Request:
    """One HTTP request of the load, with this process's monotonic times."""

    key: str  # the phone it is about
    path: str
    body: bytes
    headers: dict[str, str]
    scheduled: float = 0.0
    sent: float = 0.0
    done: float = 0.0
    status: int = 0  # 0 not sent; -1 timeout; -2 connection error
    answer: bytes = b""


class OpenLoop:
    """Sends requests at a fixed rate, whatever the server's answers take (no coordinated
    omission): a pacer thread hands each request to the first free of ``connections`` threads at
    its scheduled time. ``make(i)`` builds the i-th request; it stops after ``count`` (None: when
    ``stop()`` is called)."""

    def __init__(
        self,
        name: str,
        base: str,
        rate: float,
        make: Callable[[int], Request],
        count: int | None,
        connections: int,
        timeout: float = 30.0,
    ):
        self.name, self.rate, self.make, self.count = name, rate, make, count
        self.netloc = urlsplit(base).netloc
        self.connections, self.timeout = connections, timeout
        self.requests: list[Request] = []
        self._work: queue.Queue[Request | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, at: float) -> None:
        self._threads = [
            threading.Thread(target=self._sender, name=f"{self.name}-{k}", daemon=True)
            for k in range(self.connections)
        ]
        pacer = threading.Thread(target=self._pace, args=(at,), name=f"{self.name}-pacer", daemon=True)
        self._threads.append(pacer)
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def finished(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def _pace(self, at: float) -> None:
        i = 0
        while not self._stop.is_set() and (self.count is None or i < self.count):
            request = self.make(i)
            request.scheduled = at + i / self.rate
            self.requests.append(request)
            delay = request.scheduled - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                self.requests.pop()
                break
            self._work.put(request)
            i += 1
        for _ in range(self.connections):
            self._work.put(None)

    def _sender(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while True:
            request = self._work.get()
            if request is None:
                if conn is not None:
                    conn.close()
                return
            request.sent = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.netloc, timeout=self.timeout)
                conn.request("POST", request.path, body=request.body, headers=request.headers)
                response = conn.getresponse()
                request.answer = response.read()
                request.status = response.status
                if response.will_close:
                    conn.close()
                    conn = None
            except TimeoutError:
                request.status = -1
            except (OSError, http.client.HTTPException):
                request.status = -2
            if request.status < 0 and conn is not None:
                conn.close()
                conn = None
            request.done = time.monotonic()


def webhook_body(n: int, sent_at: int) -> bytes:
    phone = customer_phone(n)
    digest = hashlib.sha256(f"ai-backlog:{n}:{sent_at}".encode()).hexdigest()[:32].upper()
    contacts = [{"profile": {"name": f"Cliente {n}"}, "wa_id": phone}]
    message = {
        "from": phone,
        "id": f"wamid.HBgN{phone}FQIAEhgg{digest}AA==",
        "timestamp": str(sent_at),
        "type": "text",
        "text": {"body": question(n)},
    }
    return cloud_webhook_body(WABA_ID, PHONE_NUMBER_ID, DISPLAY_PHONE, contacts, [message])


# ----------------------------------------------------------------------------------------------
# CPU accounting from /proc
# ----------------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _cpu_seconds(pid: int, reaped: bool = False) -> float:
    fields = _stat(pid)
    if not fields:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def cpu_snapshot(web: int | None, workers: list[int]) -> dict[str, float]:
    """CPU seconds so far: the web server (gunicorn and its workers), the task workers,
    PostgreSQL (every database; exited backends through the postmaster), Redis, this process
    (load, emulator, stub), and the machine (busy, total)."""
    snap = {"web": 0.0, "workers": sum(_cpu_seconds(p) for p in workers), "pg": 0.0, "redis": 0.0}
    if web is not None:
        snap["web"] = _cpu_seconds(web) + sum(_cpu_seconds(p) for p in _children(web))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid, comm = int(entry.name), _comm(int(entry.name))
        if comm.startswith("postgres"):
            fields = _stat(pid)
            parent = int(fields[1]) if fields else 0
            snap["pg"] += _cpu_seconds(pid, reaped=not _comm(parent).startswith("postgres"))
        elif comm.startswith("redis-server"):
            snap["redis"] += _cpu_seconds(pid)
    snap["this"] = time.process_time()
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    snap["busy"] = (sum(parts) - parts[3] - parts[4]) / os.sysconf("SC_CLK_TCK")
    snap["total"] = sum(parts) / os.sysconf("SC_CLK_TCK")
    return snap


# ----------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------


@dataclass
class Result:
    figures: dict[str, float] = field(default_factory=dict)  # medians are taken of these
    counts: dict[str, Any] = field(default_factory=dict)  # shown as they are

    def met(self, per_minute: int) -> dict[str, bool]:
        f = self.figures
        return {
            "wait": f["wait_p95"] <= TARGET_WAIT_P95_S and f["api_unsent"] == 0,
            "lost": f["lost"] == 0 and f["webhook_non200"] == 0,
            "dup": f["duplicates"] == 0,
            "budget": f["stub_above"] == 0 and f["calls_above_day"] == 0,
        }


class Bench:
    def __init__(self, args: argparse.Namespace, run_no: int):
        self.args = args
        self.run_no = run_no
        self.db_name: str = args.db_name
        self.redis_url = f"redis://{HOST}:{REDIS_PORT}/{args.redis_db}"
        self.db_url = f"postgresql+psycopg://postgres@{HOST}:{PG_PORT}/{self.db_name}"
        self.tmp = Path(tempfile.mkdtemp(prefix="zapdesk-bench-ai-"))
        self.instance = self.tmp / "instance"
        self.instance.mkdir()
        self.graph: Any = None
        self.gemini: Any = None
        self.web: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.port = 0
        self.webhook_path = ""
        self.token = ""
        self.db_created = False
        self.updates_before: dict[str, int] = {}
        self.updates: dict[str, int] = {}
        self._logs: list[Any] = []

    # -- environment ---------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "GRAPH_", "GEMINI_"))}
        env.update(
            {
                "FLASK_APP": "app.py",
                "DATABASE_URL": self.db_url,
                "REDIS_URL": self.redis_url,
                "SECRET_KEY": SECRET_KEY,
                "CRM_INSTANCE_PATH": str(self.instance),
                "GRAPH_API_URL": f"http://{HOST}:9/v23.0",  # the number's own graph_url is the emulator
                "GEMINI_API_KEY": GEMINI_KEY,
                "GEMINI_BASE_URL": self.gemini.url if self.gemini is not None else f"http://{HOST}:9",
                "WORKER_THREADS": str(self.args.threads),
                "AI_WORKER_THREADS": str(self.args.ai_threads),
                "LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.pop("ENCRYPTION_KEY", None)
        return env

    def pg(self, dbname: str) -> Any:
        return pg_connect(dbname)

    def redis(self) -> Any:
        return redis_client(self.redis_url)

    def run_cli(self, *argv: str, timeout: float = 180) -> dict[str, Any]:
        out = run_cli(argv, self.env(), timeout)
        try:
            return dict(json.loads(out.strip().splitlines()[-1]))
        except (ValueError, IndexError) as exc:
            raise BenchError(f"`flask {' '.join(argv[:2])}` printed no JSON: {out[-300:]!r}") from exc

    # -- setup ---------------------------------------------------------------------------------
    def preflight(self) -> None:
        import redis

        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.db_name) or "bench" not in self.db_name:
            raise BenchError(
                f"--db-name {self.db_name!r}: use a lowercase name containing 'bench' (it is dropped)"
            )
        if self.db_name == "test" or self.args.redis_db in (12, 15):
            raise BenchError("the database `test` and Redis dbs 12 and 15 belong to the test suites")
        for tool in ("gunicorn", "flask"):
            if not (BIN / tool).exists():
                raise BenchError(
                    f"{BIN / tool} not found: run this script with the project's .venv/bin/python"
                )
        with self.pg("postgres") as conn:
            conn.execute("SELECT 1")
        try:
            self.redis().ping()
        except redis.RedisError as exc:
            raise BenchError(f"Redis at {HOST}:{REDIS_PORT} is not reachable: {exc}") from exc

    def setup(self) -> dict[str, Any]:
        from tests.fakes.gemini import GeminiStub, Outcome
        from tests.fakes.graph_api import GraphEmulator

        args = self.args
        log(f"setup: database {self.db_name}, Redis db {args.redis_db}, instance {self.instance}")
        with self.pg("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.db_created = True
        self.redis().flushdb()
        self.graph = GraphEmulator(
            access_token=ACCESS_TOKEN,
            phone_number_id=PHONE_NUMBER_ID,
            display_phone_number=DISPLAY_PHONE,
            throughput=args.throughput,
        ).start()
        self.gemini = GeminiStub(
            api_keys=[GEMINI_KEY],
            random_429=args.random_429,
            seed=args.seed + self.run_no,
            latency=args.latency,
        )
        self.gemini.set_random_429(
            args.random_429, seed=args.seed + self.run_no, retry_delay=args.retry_delay
        )

        def answer(call: Any) -> dict[str, Any]:
            asked = call.last_user_text.split("\n")[-1][:60]
            return {"reply": f"Olá! Sobre “{asked}”: confirmamos em seguida. Obrigado!", "handoff": False}

        self.gemini.set_default(Outcome.json_answer(answer))
        self.gemini.start()
        run_cli(("db", "upgrade"), self.env(), 180)
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
        self.token = str(
            self.run_cli("crm", "create-token", "--workspace", WORKSPACE, "--email", ADMIN_EMAIL)["token"]
        )
        account = self.run_cli(
            "crm", "add-account", "--workspace", WORKSPACE, "--provider", "cloud",
            "--name", "Bench Cloud number", "--phone-number-id", PHONE_NUMBER_ID,
            "--access-token", ACCESS_TOKEN, "--app-secret", APP_SECRET,
            "--verify-token", VERIFY_TOKEN, "--waba-id", WABA_ID, "--graph-url", self.graph.base_url,
        )  # fmt: skip
        self.webhook_path = str(account["webhook_path"])
        knowledge = self.tmp / "knowledge.txt"
        knowledge.write_text(KNOWLEDGE, encoding="utf-8")
        settings = self.run_cli(
            "crm", "set-ai", "--workspace", WORKSPACE, "--enabled", "true", "--mode", "always",
            "--per-minute", str(args.per_minute), "--per-day", str(args.per_day),
            "--knowledge-file", str(knowledge),
        )  # fmt: skip
        log(
            f"setup: Graph emulator {self.graph.base_url} (throughput {args.throughput}/s); Gemini stub "
            f"{self.gemini.url} ({args.random_429:.0%} 429s, retryDelay {args.retry_delay}, latency "
            f"{args.latency:g} s, seed {args.seed + self.run_no}); AI on, budget "
            f"{settings['per_minute']}/min, {settings['per_day']}/day"
        )
        return settings

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        return spawn(self.tmp, name, cmd, self.env(), self._logs)

    def _log_tail(self, name: str, lines: int = 15) -> str:
        return log_tail(self.tmp, name, lines)

    def start(self) -> None:
        import httpx

        for k in range(self.args.workers):
            self.workers.append(self._spawn(f"worker{k}", [str(BIN / "flask"), "crm", "worker"]))
        for attempt in range(3):  # a port picked free can be taken before gunicorn binds it
            with socket.socket() as s:
                s.bind((HOST, 0))
                self.port = int(s.getsockname()[1])
            cmd = [
                str(BIN / "gunicorn"), "-k", "gthread", "--threads", str(self.args.web_threads),
                "-w", str(self.args.web_workers), "-b", f"{HOST}:{self.port}", "wsgi:app",
            ]  # fmt: skip
            self.web = self._spawn("gunicorn", cmd)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self.web.poll() is None:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                        break
                time.sleep(0.3)
            else:
                if self.web.poll() is not None and attempt < 2 and "in use" in self._log_tail("gunicorn"):
                    continue
                raise BenchError(
                    "gunicorn did not answer /healthz within 60 s:\n" + self._log_tail("gunicorn")
                )
            break
        assert self.web is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_children(self.web.pid)) < self.args.web_workers:
            time.sleep(0.2)
        deadline = time.monotonic() + 60
        for k, proc in enumerate(self.workers):
            while b'"worker": "started"' not in (self.tmp / f"worker{k}.log").read_bytes():
                if proc.poll() is not None:
                    raise BenchError(f"flask crm worker exited:\n{self._log_tail(f'worker{k}')}")
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"flask crm worker did not start in 60 s:\n{self._log_tail(f'worker{k}')}"
                    )
                time.sleep(0.2)
        verify = httpx.get(
            f"{self.base}{self.webhook_path}",
            params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"},
            timeout=5,
        )
        if verify.status_code != 200 or verify.text != "42":
            raise BenchError(f"webhook verification failed: {verify.status_code} {verify.text[:200]}")
        log(
            f"server: gunicorn -w {self.args.web_workers} --threads {self.args.web_threads} on {self.base}; "
            f"{self.args.workers} x flask crm worker (WORKER_THREADS {self.args.threads}, AI_WORKER_THREADS "
            f"{self.args.ai_threads})"
        )

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def check_processes(self) -> None:
        if self.web is not None and self.web.poll() is not None:
            raise BenchError(f"gunicorn exited ({self.web.returncode}):\n{self._log_tail('gunicorn')}")
        for k, proc in enumerate(self.workers):
            if proc.poll() is not None:
                raise BenchError(f"worker {k} exited ({proc.returncode}):\n{self._log_tail(f'worker{k}')}")

    # -- the load ------------------------------------------------------------------------------
    def _webhook(self, i: int) -> Request:
        body = webhook_body(i, int(time.time()))
        signature = meta_signature(APP_SECRET, body)
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature,
            "User-Agent": "facebookexternalua",
        }
        return Request(customer_phone(i), self.webhook_path, body, headers)

    def _api_send(self, i: int) -> Request:
        body = json.dumps(
            {
                "to": f"+{api_phone(i)}",
                "text": f"Seu pedido {70_000 + i} foi confirmado e sai hoje. Obrigado pela compra!",
                "idempotency_key": f"bench-ai-backlog-{i}",
            }
        ).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        return Request(api_phone(i), "/api/v1/messages", body, headers)

    def _progress(self, conn: Any) -> tuple[dict[str, int], int]:
        states = dict(conn.execute("SELECT status, count(*) FROM ai_replies GROUP BY status").fetchall())
        busy = conn.execute("SELECT count(*) FROM outbox WHERE state IN ('queued', 'sending')").fetchone()[0]
        return {str(k): int(v) for k, v in states.items()}, int(busy)

    def _row_updates(self, conn: Any) -> dict[str, int]:
        """Rows updated so far in the AI tables (PostgreSQL's statistics, flushed by each backend
        within a few seconds): ``ai_settings`` is updated by every budget check (its row lock),
        ``ai_replies`` by every claim, reschedule and settlement of a reply."""
        rows = conn.execute(
            "SELECT relname, n_tup_upd FROM pg_stat_user_tables "
            "WHERE relname IN ('ai_settings', 'ai_replies')"
        ).fetchall()
        return {str(name): int(n) for name, n in rows}

    def run(self) -> Result:
        args = self.args
        messages = args.messages
        webhooks = OpenLoop("webhook", self.base, args.rate, self._webhook, messages, args.connections)
        api = OpenLoop("api", self.base, args.api_rate, self._api_send, None, 4)
        cpu_before = cpu_snapshot(self.web.pid if self.web else None, [p.pid for p in self.workers])
        started = time.monotonic() + 0.5
        wall_started = time.time() + 0.5
        webhooks.start(started)
        api.start(started)
        log(
            f"load: {messages:,} webhooks at {args.rate:g}/s ({messages / args.rate:.0f} s), API sends at "
            f"{args.api_rate:g}/s until every AI reply is settled"
        )
        settle_by = started + messages / args.rate + args.settle_timeout
        last_report = time.monotonic()
        settled_at = 0.0
        with self.pg(self.db_name) as conn:
            self.updates_before = self._row_updates(conn)
            while True:
                time.sleep(1)
                self.check_processes()
                states, busy = self._progress(conn)
                total = sum(states.values())
                open_rows = states.get("pending", 0) + states.get("answering", 0)
                stored_all = total >= sum(1 for r in webhooks.requests if r.status == 200)
                if webhooks.finished and stored_all and open_rows == 0 and busy == 0:
                    settled_at = time.monotonic()
                    break
                if time.monotonic() > settle_by:
                    api.stop()
                    raise BenchError(
                        f"not settled {args.settle_timeout:.0f} s after the last webhook: ai_replies "
                        f"{states}, {busy} outbox rows queued or sending"
                    )
                if time.monotonic() - last_report >= 15:
                    last_report = time.monotonic()
                    waits = self._waits(api.requests)
                    posted = sum(1 for r in webhooks.requests if r.done)
                    log(
                        f"  {time.monotonic() - started:5.0f} s: webhooks {posted}, "
                        f"ai_replies {dict(sorted(states.items()))}, stub calls {self.gemini.call_count} "
                        f"({self.gemini.counts['rate_limited']} 429s), accepted {len(self.graph.sent)}, "
                        f"API wait p95 {pct(waits, 95):.2f} s of {len(waits)}"
                    )
            api.stop()
            api.join(30)
            # the API sends made while the backlog drained: wait for the last ones to go out
            deadline = time.monotonic() + 60
            while self._progress(conn)[1] and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(1.0)
            updates = self._row_updates(conn)
            self.updates = {k: n - self.updates_before.get(k, 0) for k, n in updates.items()}
            cpu_after = cpu_snapshot(self.web.pid if self.web else None, [p.pid for p in self.workers])
            return self._collect(
                conn, webhooks, api, started, wall_started, settled_at, cpu_before, cpu_after
            )

    def _accepted(self) -> dict[str, list[float]]:
        by_phone: dict[str, list[float]] = {}
        for sent in self.graph.sent:
            by_phone.setdefault(sent.to.lstrip("+"), []).append(sent.accepted_at)
        return by_phone

    def _waits(self, requests: Sequence[Request]) -> list[float]:
        accepted = self._accepted()
        return [
            accepted[r.key][0] - r.done
            for r in list(requests)
            if r.status == 202 and r.done and r.key in accepted
        ]

    def _collect(
        self,
        conn: Any,
        webhooks: OpenLoop,
        api: OpenLoop,
        started: float,
        wall_started: float,
        settled_at: float,
        cpu_before: dict[str, float],
        cpu_after: dict[str, float],
    ) -> Result:
        args = self.args
        accepted = self._accepted()
        # -- the ordinary sends
        api_ok = [r for r in api.requests if r.status == 202]
        waits = self._waits(api.requests)
        api_unsent = sum(1 for r in api_ok if r.key not in accepted)
        api_dup = sum(len(accepted.get(r.key, [])) - 1 for r in api_ok if len(accepted.get(r.key, [])) > 1)
        api_latency = [r.done - r.scheduled for r in api_ok]
        # -- the inbound messages and their replies
        acked = [r for r in webhooks.requests if r.status == 200]
        ack_at = {r.key: r.done for r in acked}
        inbound = conn.execute(
            "SELECT m.id, l.phone FROM messages m JOIN conversations c ON c.id = m.conversation_id "
            "JOIN leads l ON l.id = c.lead_id WHERE m.direction = 'in'"
        ).fetchall()
        phone_of = {int(mid): str(phone).lstrip("+") for mid, phone in inbound}
        keys = dict(
            conn.execute(
                "SELECT idempotency_key, count(*) FROM outbox WHERE idempotency_key LIKE 'ai:%' GROUP BY 1"
            ).fetchall()
        )
        replies = conn.execute(
            "SELECT r.message_id, r.status, coalesce(r.error, ''), r.attempts, m.author, o.state "
            "FROM ai_replies r LEFT JOIN messages m ON m.id = r.reply_message_id "
            "LEFT JOIN outbox o ON o.message_id = m.id"
        ).fetchall()
        per_conversation = conn.execute(
            "SELECT count(*) FROM messages WHERE direction = 'out' AND author IN ('ai', 'fallback') "
            "GROUP BY conversation_id HAVING count(*) > 1"
        ).fetchall()
        author_of = {int(mid): str(author or "") for mid, _s, _e, _a, author, _o in replies}
        lost_ids = [
            mid
            for mid, phone in phone_of.items()
            if keys.get(f"ai:{mid}", 0) == 0
            or phone not in accepted
            or author_of.get(mid) not in ("ai", "fallback")
        ]
        customers = {customer_phone(i) for i in range(args.messages)}
        dup_keys = sum(n - 1 for n in keys.values() if n > 1)
        dup_conversations = sum(int(n) - 1 for (n,) in per_conversation)
        dup_phones = sum(len(accepted.get(p, [])) - 1 for p in customers if len(accepted.get(p, [])) > 1)
        stray = sorted(set(accepted) - customers - {r.key for r in api.requests})
        latency: dict[str, list[float]] = {"ai": [], "fallback": []}
        for mid, phone in phone_of.items():
            if phone in accepted and phone in ack_at and author_of.get(mid) in latency:
                latency[author_of[mid]].append(accepted[phone][0] - ack_at[phone])
        statuses = Counter(str(s) for _m, s, _e, _a, _au, _o in replies)
        reasons = Counter(f"{s}:{e}" if e else str(s) for _m, s, e, _a, _au, _o in replies if s != "answered")
        attempts = Counter(int(a) for _m, _s, _e, a, _au, _o in replies)
        outbox_states = Counter(str(o) for *_rest, o in replies)
        # -- the budget, at the stub's side and in ai_calls
        calls = sorted(c.received_at for c in self.gemini.calls)
        stub_outcomes = Counter(c.outcome for c in self.gemini.calls)
        db_calls = [
            at.timestamp()
            for (at,) in conn.execute("SELECT at FROM ai_calls ORDER BY at").fetchall()
            if isinstance(at, datetime)
        ]
        call_outcomes = dict(conn.execute("SELECT coalesce(outcome, '?'), count(*) FROM ai_calls GROUP BY 1"))
        # slot taken (ai_calls.at, the worker's clock) → arrival at the stub (this process's wall
        # clock; the same machine): matched in order, exact but for calls overtaking each other
        arrivals = sorted(c.received_wall for c in self.gemini.calls)
        delays = (
            [a - t for a, t in zip(arrivals, db_calls, strict=False)]
            if len(arrivals) == len(db_calls)
            else []
        )
        cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_before}
        elapsed = max(cpu["total"] / (os.cpu_count() or 1), 1.0)
        all_latency = latency["ai"] + latency["fallback"]
        figures = {
            "wait_p50": pct(waits, 50),
            "wait_p95": pct(waits, 95),
            "wait_p99": pct(waits, 99),
            "wait_max": max(waits) if waits else float("nan"),
            "api_sends": float(len(api.requests)),
            "api_202": float(len(api_ok)),
            "api_unsent": float(api_unsent),
            "api_dup": float(api_dup),
            "api_p95_ms": pct(api_latency, 95) * 1000,
            "webhook_non200": float(len(webhooks.requests) - len(acked)),
            "webhook_p99_ms": pct([r.done - r.scheduled for r in acked], 99) * 1000,
            "inbound": float(len(phone_of)),
            "lost": float(len(lost_ids) + (args.messages - len(phone_of))),
            "duplicates": float(dup_keys + dup_conversations + dup_phones),
            "ai": float(sum(1 for a in author_of.values() if a == "ai")),
            "fallback": float(sum(1 for a in author_of.values() if a == "fallback")),
            "stub_calls": float(len(calls)),
            "stub_429": float(stub_outcomes.get("rate_limited", 0)),
            "stub_max_60s": float(max_in_window(calls, 60.0)),
            "stub_above": float(above(calls, 60.0, args.per_minute)),
            "slot_delay_p50_ms": pct(delays, 50) * 1000,
            "slot_delay_p99_ms": pct(delays, 99) * 1000,
            "slot_delay_max_ms": (max(delays) if delays else float("nan")) * 1000,
            "db_calls": float(len(db_calls)),
            "db_max_60s": float(max_in_window(db_calls, 60.0)),
            "calls_above_day": float(max(0, len(calls) - args.per_day)),
            "latency_p50": pct(all_latency, 50),
            "latency_p95": pct(all_latency, 95),
            "latency_ai_p50": pct(latency["ai"], 50),
            "latency_ai_p95": pct(latency["ai"], 95),
            "latency_fallback_p50": pct(latency["fallback"], 50),
            "budget_checks": float(self.updates.get("ai_settings", 0)),
            "reply_updates": float(self.updates.get("ai_replies", 0)),
            "latency_max": max(all_latency) if all_latency else float("nan"),
            "settle_s": settled_at - started,
            "cpu_web": cpu["web"] / elapsed,
            "cpu_workers": cpu["workers"] / elapsed,
            "cpu_pg": cpu["pg"] / elapsed,
            "cpu_this": cpu["this"] / elapsed,
            "cpu_busy": cpu["busy"] / elapsed,
            "cpu_worker_ms_per_reply": cpu["workers"] * 1000 / max(len(phone_of) + len(api_ok), 1),
        }
        counts = {
            "statuses": dict(sorted(statuses.items())),
            "not_answered": dict(reasons.most_common()),
            "attempts": dict(sorted(attempts.items())),
            "reply_outbox": dict(outbox_states),
            "stub_outcomes": dict(stub_outcomes),
            "call_outcomes": call_outcomes,
            "dup_parts": (dup_keys, dup_conversations, dup_phones),
            "stray": stray[:5],
            "lost_ids": lost_ids[:10],
            "duration_s": time.time() - wall_started,
        }
        return Result(figures, counts)

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

    def cleanup(self) -> None:
        self._stop(self.web, "gunicorn", 20)
        for k, proc in enumerate(self.workers):
            self._stop(proc, f"worker {k}", 20)
        for fake in (self.graph, self.gemini):
            if fake is not None:
                with contextlib.suppress(Exception):
                    fake.stop()
        for fh in self._logs:
            with contextlib.suppress(OSError):
                fh.close()
        if self.db_created and not self.args.keep:
            try:
                with self.pg("postgres") as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
                self.redis().flushdb()
            except Exception as exc:  # cleanup is best effort, and says so
                log(f"cleanup: could not drop {self.db_name}: {exc}")
        if self.args.keep:
            log(f"kept: database {self.db_name}, Redis db {self.args.redis_db}, logs in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def median_of(results: list[Result]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in results[0].figures:
        values = [r.figures[key] for r in results if r.figures[key] == r.figures[key]]  # no NaN
        # integrity counts: the worst run, not the median
        worst = key in ("lost", "duplicates", "api_unsent", "api_dup", "webhook_non200", "calls_above_day")
        if key in ("stub_max_60s", "db_max_60s", "stub_above"):
            worst = True
        out[key] = (max(values) if worst else statistics.median(values)) if values else float("nan")
    return out


def report_run(r: Result, args: argparse.Namespace, label: str) -> None:
    f, c = r.figures, r.counts
    log(
        f"{label}: settled {f['settle_s']:.0f} s after the first webhook; "
        f"webhooks {f['inbound']:.0f} stored ({f['webhook_non200']:.0f} non-200, "
        f"ack p99 {f['webhook_p99_ms']:.0f} ms)"
    )
    log(
        f"  send-queue wait (API 202 → accepted), {f['api_202']:.0f} sends: p50 {f['wait_p50']:.3f} s, "
        f"p95 {f['wait_p95']:.3f} s, p99 {f['wait_p99']:.3f} s, max {f['wait_max']:.3f} s; "
        f"{f['api_unsent']:.0f} never accepted, {f['api_dup']:.0f} twice; "
        f"API answer p95 {f['api_p95_ms']:.0f} ms"
    )
    log(
        f"  replies: {f['ai']:.0f} ai + {f['fallback']:.0f} fallback of {f['inbound']:.0f}; "
        f"lost {f['lost']:.0f}, duplicates {f['duplicates']:.0f} "
        f"(keys/conversations/phones {c['dup_parts']}); rows {c['statuses']}"
    )
    log(f"  not answered by Gemini: {c['not_answered'] or 'none'}; attempts {c['attempts']}")
    log(
        f"  Gemini stub: {f['stub_calls']:.0f} calls ({c['stub_outcomes']}), most in any 60 s "
        f"{f['stub_max_60s']:.0f} (budget {args.per_minute}); ai_calls rows {f['db_calls']:.0f} "
        f"({c['call_outcomes']}), most in 60 s {f['db_max_60s']:.0f}; {f['stub_above']:.0f} calls above the "
        f"budget; slot taken → arrival p50 {f['slot_delay_p50_ms']:.1f} ms, "
        f"p99 {f['slot_delay_p99_ms']:.1f} ms, max {f['slot_delay_max_ms']:.1f} ms"
    )
    log(
        f"  AI reply latency (webhook ack → reply accepted, 3 s debounce included): all p50 "
        f"{f['latency_p50']:.1f} s, p95 {f['latency_p95']:.1f} s, max {f['latency_max']:.1f} s; "
        f"ai answers p50 {f['latency_ai_p50']:.1f} s, p95 {f['latency_ai_p95']:.1f} s; fallbacks p50 "
        f"{f['latency_fallback_p50']:.1f} s"
    )
    log(
        f"  row updates (PostgreSQL statistics): ai_settings {f['budget_checks']:.0f} (budget checks), "
        f"ai_replies {f['reply_updates']:.0f} (claims, reschedules, settlements)"
    )
    log(
        f"  CPU, cores averaged: web {f['cpu_web']:.2f}, workers {f['cpu_workers']:.2f}, PostgreSQL "
        f"{f['cpu_pg']:.2f}, this process {f['cpu_this']:.2f}; machine {f['cpu_busy']:.2f} busy of "
        f"{os.cpu_count()}; {f['cpu_worker_ms_per_reply']:.1f} ms of worker CPU per send"
    )
    if c["lost_ids"] or c["stray"]:
        log(f"  lost message ids (first 10) {c['lost_ids']}; phones nobody wrote from {c['stray']}")


def report(results: list[Result], args: argparse.Namespace) -> bool:
    m = median_of(results)
    runs = len(results)
    how = f"medians of {runs} runs (integrity: the worst run)" if runs > 1 else "one run"
    per_run = " / ".join(f"{r.figures['wait_p95']:.3f}" for r in results)
    met = {k: all(r.met(args.per_minute)[k] for r in results) for k in ("wait", "lost", "dup", "budget")}
    rows = [
        ("send-queue wait p95", f"{m['wait_p95']:.3f} s",
         f"p50 {m['wait_p50']:.3f}, max {m['wait_max']:.3f} (per run p95 {per_run}); "
         f"target ≤ {TARGET_WAIT_P95_S:g} s: {verdict(met['wait'])}"),
        ("lost replies", f"{m['lost']:.0f}",
         f"of {args.messages:,} inbound ({m['webhook_non200']:.0f} webhooks not acked); target 0: "
         f"{verdict(met['lost'])}"),
        ("duplicate replies", f"{m['duplicates']:.0f}", f"target 0: {verdict(met['dup'])}"),
        ("most calls in 60 s", f"{m['stub_max_60s']:.0f}",
         f"at the stub (ai_calls: {m['db_max_60s']:.0f}); budget {args.per_minute}/min, {args.per_day}/day; "
         f"{m['stub_above']:.0f} calls above; target 0: {verdict(met['budget'])}"),
        ("ai / fallback", f"{m['ai']:.0f} / {m['fallback']:.0f}",
         f"stub calls {m['stub_calls']:.0f}, 429s served {m['stub_429']:.0f}"),
        ("AI reply latency", f"{m['latency_p50']:.1f} s",
         f"p50; p95 {m['latency_p95']:.1f} s, max {m['latency_max']:.1f} s (ai answers: p50 "
         f"{m['latency_ai_p50']:.1f}, p95 {m['latency_ai_p95']:.1f})"),
        ("settled after", f"{m['settle_s']:.0f} s", f"{m['api_202']:.0f} API sends meanwhile"),
    ]  # fmt: skip
    log("")
    log(
        f"{args.messages:,} customers at {args.rate:g}/s, API sends at {args.api_rate:g}/s, "
        f"{args.random_429:.0%} 429s (retryDelay {args.retry_delay}), stub latency {args.latency:g} s; {how}"
    )
    for label, value, note in rows:
        log(f"{label:<20} {value:>12}   {note}")
    return all(met.values())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--messages", type=int, default=1000, help="inbound messages, one customer each")
    p.add_argument("--rate", type=float, default=50.0, help="webhooks per second")
    p.add_argument("--api-rate", type=float, default=5.0, help="API sends per second, throughout")
    p.add_argument("--per-minute", type=int, default=900, help="the workspace's Gemini requests per minute")
    p.add_argument("--per-day", type=int, default=100_000, help="the workspace's Gemini requests per day")
    p.add_argument("--random-429", type=float, default=0.3, help="fraction of Gemini calls answered 429")
    p.add_argument("--retry-delay", default="2s", help="the 429s' RetryInfo retryDelay")
    p.add_argument("--latency", type=float, default=0.0, help="seconds the stub takes per answer")
    p.add_argument("--seed", type=int, default=0, help="the stub's 429 draw (run k uses seed + k)")
    p.add_argument("--repeat", type=int, default=1, help="runs, each on a fresh database; medians")
    p.add_argument("--workers", type=int, default=1, help="`flask crm worker` processes")
    p.add_argument("--threads", type=int, default=4, help="WORKER_THREADS (sends) per worker process")
    p.add_argument("--ai-threads", type=int, default=8, help="AI_WORKER_THREADS per worker process")
    p.add_argument("--web-workers", type=int, default=2, help="gunicorn processes")
    p.add_argument("--web-threads", type=int, default=16, help="gunicorn threads per process")
    p.add_argument("--connections", type=int, default=8, help="webhook sender threads")
    p.add_argument("--throughput", type=int, default=80, help="the Graph emulator's sends per second")
    p.add_argument("--settle-timeout", type=float, default=300.0, help="seconds after the last webhook")
    p.add_argument("--db-name", default="bench_ai", help="PostgreSQL database (dropped and recreated)")
    p.add_argument("--redis-db", type=int, default=11, help="Redis database (flushed)")
    p.add_argument("--keep", action="store_true", help="keep the database, Redis db and logs (last run)")
    args = p.parse_args(argv)
    if min(args.messages, args.repeat, args.workers, args.threads, args.ai_threads, args.per_minute) < 1:
        p.error("--messages, --repeat, --workers, --threads, --ai-threads and --per-minute must be >= 1")
    if args.rate <= 0 or args.api_rate <= 0 or not 0 <= args.random_429 <= 1:
        p.error("--rate and --api-rate must be > 0, --random-429 within [0, 1]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT as well: a shell that starts this script in the background makes it ignore SIGINT.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    started = time.monotonic()
    results: list[Result] = []
    try:
        for k in range(args.repeat):
            bench = Bench(args, k)
            try:
                bench.preflight()
                bench.setup()
                bench.start()
                result = bench.run()
            finally:
                bench.cleanup()
            results.append(result)
            report_run(result, args, f"run {k + 1}/{args.repeat}")
        ok = report(results, args)
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted; cleaned up")
        return 130
    finally:
        log(f"total time {time.monotonic() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
