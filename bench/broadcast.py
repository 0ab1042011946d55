#!/usr/bin/env python3
"""Benchmark: a broadcast to 100,000 leads through one Cloud API number, paced at 80 msg/s.

    .venv/bin/python bench/broadcast.py                    # 100,000 leads (21 min at 80/s; 40 here)
    .venv/bin/python bench/broadcast.py --leads 5000       # a quick look (2-3 minutes)
    .venv/bin/python bench/broadcast.py --workers 1 --threads 8   # another worker layout

What it does, all on 127.0.0.1:

1. Setup: drops and recreates the PostgreSQL database ``bench_broadcast``, flushes Redis db 14,
   runs ``flask db upgrade`` and ``flask crm create-admin`` in a temporary instance directory.
   It starts the Graph API emulator (``tests/fakes/graph_api.py``) in this process with
   ``throughput=80``: like Meta, it answers 130429 to a send arriving when 80 sends of the number
   were already accepted in the last second (a sliding window on its arrival clock). The number is
   added with ``flask crm add-account --provider cloud --graph-url <emulator>``, and the leads
   (opted in, one distinct mobile each) are written with one COPY.
2. Starts ``--workers`` processes of ``flask crm worker --threads N`` (the product in scaled mode,
   Huey on Redis) with the same DATABASE_URL, REDIS_URL and SECRET_KEY as this script's app, so the
   number's access token decrypts. Default: 2 processes x 4 threads. Two processes because there
   are two cores and each process has one GIL; 4 threads each because a send mostly waits (four
   commits in PostgreSQL and one HTTP call), so 8 sends in flight cover 80/s with room to spare;
   more processes would only take CPU from PostgreSQL and the emulator on the same two cores
   (the layouts compared: BENCHMARKS.md, "Broadcasts").
3. Creates the broadcast in this process through ``crm.broadcasts.services.create_broadcast``
   (what the web form and the API call) and times that call: it checks the draft, materialises
   every recipient with one INSERT … SELECT and commits. The workers' dispatcher then releases the
   recipients into the outbox, a couple of seconds of sending ahead, and the senders pace them.
4. Waits until the broadcast is ``done``, printing progress every 30 s, then reports:
   materialise seconds; send wall time (first to last accepted send, as the emulator saw them);
   sends per second (median of the whole 1 s buckets, and the most accepted in any sliding 1 s
   window of arrival times; the same for attempts, refused ones included); the number of 130429
   answers; duplicates (a recipient phone accepted more than once); whether every recipient was
   accepted; Redis ``used_memory`` before the broadcast, after it and its growth (and the peak,
   sampled every second); the queue's pending and scheduled jobs at the end; the CPU of the
   workers, PostgreSQL, Redis, this process (the emulator) and the whole machine.
5. Cleanup (also on Ctrl-C, SIGTERM or an error): SIGTERM to each worker (SIGKILL to its process
   group after a bounded wait), the database dropped and Redis db 14 flushed unless ``--keep``.

Targets: materialise ≤ 2 s; 80 msg/s sustained with no 130429; 0 duplicates; every recipient sent;
Redis growth ≤ 20 MB. Exit status: 0 when every recipient was accepted exactly once (whether or
not the other targets are met), 1 when one was missed or duplicated, 2 for a setup or environment
error (PostgreSQL or Redis down, a worker that died, the broadcast not done in time).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import HOST, PG_PORT, BenchError, log_tail, pg_connect, redis_client, run_cli, spawn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent  # the virtualenv this script runs in (.venv/bin)

REDIS_PORT = 6379

TARGET_MATERIALISE_S = 2.0
TARGET_RATE = 80  # Meta's default throughput per Cloud API number, and our limiter's
TARGET_REDIS_GROWTH_MB = 20.0

WORKSPACE = "Bench"
ADMIN_EMAIL = "bench@example.com"
ADMIN_PASSWORD = "bench-password-not-a-secret"
PHONE_NUMBER_ID = "106540352242922"
DISPLAY_PHONE = "5511940000000"
ACCESS_TOKEN = "bench-access-token"
SECRET_KEY = "bench-broadcast-secret-key"
TEXT = "Olá {{first_name|cliente}}! A feira começa sábado: 20% de desconto para quem mostrar esta mensagem."


def log(msg: str) -> None:
    print(f"[broadcast] {msg}", flush=True)


def phone_of(n: int) -> str:
    """The n-th lead's mobile, E.164: +55 11 9xxxx-xxxx, all distinct."""
    return f"+55119{n:08d}"


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _cpu_seconds(pid: int, reaped: bool = False) -> float:
    """utime + stime of a process; with ``reaped`` also its children that exited."""
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


def cpu_snapshot(workers: list[int]) -> dict[str, float]:
    """CPU seconds so far of the workers, PostgreSQL (every database; backends that exited are
    counted through the postmaster), Redis, this process, and the whole machine (busy, total)."""
    snap = {"workers": sum(_cpu_seconds(pid) for pid in workers), "pg": 0.0, "redis": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid, comm = int(entry.name), _comm(int(entry.name))
        if comm.startswith("postgres"):
            parent = _stat(pid)[1] if _stat(pid) else "0"
            snap["pg"] += _cpu_seconds(pid, reaped=not _comm(int(parent)).startswith("postgres"))
        elif comm.startswith("redis-server"):
            snap["redis"] += _cpu_seconds(pid)
    snap["this"] = time.process_time()
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    snap["busy"] = (sum(parts) - parts[3] - parts[4]) / os.sysconf("SC_CLK_TCK")
    snap["total"] = sum(parts) / os.sysconf("SC_CLK_TCK")
    return snap


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    """The most events in any sliding window [t, t + window) (``times`` sorted)."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def per_second(times: Sequence[float]) -> list[int]:
    """Events in each whole 1 s bucket from the first event (the last, partial, bucket dropped)."""
    if not times:
        return []
    first = times[0]
    buckets = int(times[-1] - first)
    return [
        bisect.bisect_left(times, first + k + 1) - bisect.bisect_left(times, first + k)
        for k in range(buckets)
    ]


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.db_name: str = args.db_name
        self.redis_url = f"redis://{HOST}:{REDIS_PORT}/{args.redis_db}"
        self.db_url = f"postgresql+psycopg://postgres@{HOST}:{PG_PORT}/{self.db_name}"
        self.tmp = Path(tempfile.mkdtemp(prefix="zapdesk-bench-broadcast-"))
        self.instance = self.tmp / "instance"
        self.instance.mkdir()
        self.graph: Any = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.db_created = False
        self.workspace_id = 0
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
                "WORKER_THREADS": str(self.args.threads),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.pop("ENCRYPTION_KEY", None)
        return env

    def pg(self, dbname: str) -> Any:
        return pg_connect(dbname)

    def redis(self) -> Any:
        return redis_client(self.redis_url)

    def run_cli(self, *argv: str, timeout: float = 180) -> str:
        return run_cli(argv, self.env(), timeout)

    # -- setup ---------------------------------------------------------------------------------
    def preflight(self) -> None:
        import redis

        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.db_name) or "bench" not in self.db_name:
            raise BenchError(
                f"--db-name {self.db_name!r}: use a lowercase name containing 'bench' (it is dropped)"
            )
        if self.args.redis_db in (12, 15):
            raise BenchError("--redis-db 12 and 15 belong to the test suites; pick another (default 14)")
        if not (BIN / "flask").exists():
            raise BenchError(
                f"{BIN / 'flask'} not found: run this script with the project's .venv/bin/python"
            )
        with self.pg("postgres") as conn:
            conn.execute("SELECT 1")
        try:
            self.redis().ping()
        except redis.RedisError as exc:
            raise BenchError(f"Redis at {HOST}:{REDIS_PORT} is not reachable: {exc}") from exc

    def setup(self) -> None:
        from tests.fakes.graph_api import GraphEmulator

        log(f"setup: database {self.db_name}, Redis db {self.args.redis_db}, instance {self.instance}")
        with self.pg("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.db_created = True
        self.redis().flushdb()
        self.run_cli("db", "upgrade")
        out = self.run_cli(
            "crm",
            "create-admin",
            "--workspace",
            WORKSPACE,
            "--email",
            ADMIN_EMAIL,
            "--password",
            ADMIN_PASSWORD,
        )
        self.workspace_id = int(json.loads(out.strip().splitlines()[-1])["workspace_id"])
        self.graph = GraphEmulator(
            access_token=ACCESS_TOKEN,
            phone_number_id=PHONE_NUMBER_ID,
            display_phone_number=DISPLAY_PHONE,
            throughput=self.args.throughput,
        ).start()
        self.run_cli(
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
            "bench-app-secret",
            "--verify-token",
            "bench-verify-token",
            "--graph-url",
            self.graph.base_url,
        )
        log(f"setup: Graph API emulator on {self.graph.base_url}, throughput {self.args.throughput}/s")
        self.seed_leads()

    def seed_leads(self) -> None:
        started = time.perf_counter()
        with self.pg(self.db_name) as conn, conn.cursor() as cur:
            columns = (
                "workspace_id, phone, kind, name, notes, source, opt_in, opted_in_at, created_at, updated_at"
            )
            with cur.copy(f"COPY leads ({columns}) FROM STDIN") as copy:
                for n in range(self.args.leads):
                    copy.write_row(
                        (self.workspace_id, phone_of(n), "person", f"Cliente {n}", "", "import", True,
                         "2026-11-01 12:00:00+00", "2026-11-01 12:00:00+00", "2026-11-01 12:00:00+00")
                    )  # fmt: skip
            cur.execute("ANALYZE leads")
        took = time.perf_counter() - started
        log(f"setup: {self.args.leads:,} opted-in leads written with COPY in {took:.1f} s")

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        return spawn(self.tmp, name, cmd, self.env(), self._logs)

    def _log_tail(self, name: str, lines: int = 15) -> str:
        return log_tail(self.tmp, name, lines)

    def start_workers(self) -> None:
        for k in range(self.args.workers):
            cmd = [str(BIN / "flask"), "crm", "worker", "--threads", str(self.args.threads)]
            self.workers.append(self._spawn(f"worker{k}", cmd))
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
        pids = ", ".join(str(p.pid) for p in self.workers)
        log(f"workers: {self.args.workers} x `flask crm worker --threads {self.args.threads}` (pids {pids})")

    def check_workers(self) -> None:
        for k, proc in enumerate(self.workers):
            if proc.poll() is not None:
                raise BenchError(f"worker {k} exited ({proc.returncode}):\n{self._log_tail(f'worker{k}')}")

    # -- the run -------------------------------------------------------------------------------
    def app(self) -> Any:
        os.environ.update(self.env())
        from crm import create_app

        return create_app()

    def materialise_only(self, times: int) -> None:
        """Time ``create_broadcast`` alone, ``times`` broadcasts to the same leads; the median."""
        from sqlalchemy import text

        from crm.broadcasts.services import Draft, create_broadcast
        from crm.extensions import db

        app = self.app()
        took: list[float] = []
        with app.app_context():
            db.session.execute(text("SELECT 1"))
            db.session.commit()
            for k in range(times):
                started = time.perf_counter()
                broadcast = create_broadcast(self.workspace_id, Draft(name=f"Feira {k}", variants=[TEXT]))
                took.append(time.perf_counter() - started)
                log(f"materialise {k + 1}: {broadcast.recipients_count:,} recipients in {took[-1]:.2f} s")
            db.session.remove()
        log(f"materialise: median {statistics.median(took):.2f} s of {times} (target <= 2 s)")

    def run(self) -> dict[str, Any]:
        from sqlalchemy import text

        from crm.broadcasts.services import Draft, create_broadcast
        from crm.extensions import db
        from crm.worker import huey

        app = self.app()
        redis = self.redis()
        mb = 1024 * 1024
        with app.app_context():
            db.session.execute(text("SELECT 1"))  # connect and warm up before the clock starts
            db.session.commit()
            memory_before = int(redis.info("memory")["used_memory"])
            cpu_before = cpu_snapshot([p.pid for p in self.workers])
            started = time.perf_counter()
            broadcast = create_broadcast(self.workspace_id, Draft(name="Feira de sábado", variants=[TEXT]))
            materialise_s = time.perf_counter() - started
            broadcast_id, recipients = broadcast.id, broadcast.recipients_count
            db.session.remove()
        log(f"materialise: {recipients:,} recipients in {materialise_s:.2f} s (broadcast {broadcast_id})")
        if recipients != self.args.leads:
            raise BenchError(f"{recipients} recipients for {self.args.leads} leads")

        allowed = self.args.leads / TARGET_RATE * 3 + 180
        deadline = time.monotonic() + allowed
        peak_memory, last_report, status = memory_before, time.monotonic(), ""
        with self.pg(self.db_name) as conn:
            while True:
                status = conn.execute(
                    "SELECT status FROM broadcasts WHERE id = %s", (broadcast_id,)
                ).fetchone()[0]
                peak_memory = max(peak_memory, int(redis.info("memory")["used_memory"]))
                if status in ("done", "cancelled", "paused"):
                    break
                self.check_workers()
                if time.monotonic() > deadline:
                    raise BenchError(f"the broadcast is still {status} after {allowed:.0f} s")
                if time.monotonic() - last_report >= 30:
                    last_report = time.monotonic()
                    sent, refused = len(self.graph.sent), len(self.graph.refused)
                    memory = int(redis.info("memory")["used_memory"]) / mb
                    elapsed = time.perf_counter() - started
                    log(f"  {elapsed:6.0f} s: {sent:,} accepted, {refused} refused, Redis {memory:.1f} MB")
                time.sleep(1)
            done_s = time.perf_counter() - started
            time.sleep(2)  # a send still being recorded when the broadcast turned done
            outbox = dict(conn.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
            messages = dict(conn.execute("SELECT status, count(*) FROM messages GROUP BY status").fetchall())
            recipient_states = dict(
                conn.execute(
                    "SELECT state, count(*) FROM broadcast_recipients WHERE broadcast_id = %s GROUP BY state",
                    (broadcast_id,),
                ).fetchall()
            )
            attempts = conn.execute(
                "SELECT coalesce(max(attempts), 0), count(*) FILTER (WHERE attempts > 1) FROM outbox"
            ).fetchone()
        memory_after = int(redis.info("memory")["used_memory"])
        cpu_after = cpu_snapshot([p.pid for p in self.workers])
        cpu = {key: cpu_after[key] - cpu_before[key] for key in cpu_before}
        with app.app_context():
            pending, scheduled = huey.pending_count(), huey.scheduled_count()
        keys = redis.dbsize()

        accepted = sorted(s.accepted_at for s in self.graph.sent)
        tried = sorted([*accepted, *(r.refused_at for r in self.graph.refused)])
        phones = Counter(s.to.lstrip("+") for s in self.graph.sent)  # Meta's "to" has no "+"
        expected = {phone_of(n).lstrip("+") for n in range(self.args.leads)}
        buckets = per_second(accepted)
        wall = accepted[-1] - accepted[0] if len(accepted) > 1 else 0.0
        return {
            "status": status,
            "recipients": recipients,
            "materialise_s": materialise_s,
            "done_s": done_s,
            "send_wall_s": wall,
            "accepted": len(accepted),
            "mean_rate": (len(accepted) - 1) / wall if wall else 0.0,
            "median_rate": statistics.median(buckets) if buckets else 0,
            "min_rate": min(buckets) if buckets else 0,
            "slow_seconds": sum(1 for b in buckets if b < 0.9 * TARGET_RATE),
            "buckets": len(buckets),
            "max_window": max_in_window(accepted),
            "max_window_tried": max_in_window(tried),
            "refused": len(self.graph.refused),
            "duplicates": sum(n - 1 for n in phones.values() if n > 1),
            "missing": len(expected - phones.keys()),
            "unexpected": len(phones.keys() - expected),
            "memory_before_mb": memory_before / mb,
            "memory_after_mb": memory_after / mb,
            "memory_peak_mb": peak_memory / mb,
            "pending": pending,
            "scheduled": scheduled,
            "redis_keys": keys,
            "outbox": outbox,
            "messages": messages,
            "recipient_states": recipient_states,
            "max_attempts": attempts[0],
            "retried_rows": attempts[1],
            "cpu": cpu,
        }

    # -- cleanup -------------------------------------------------------------------------------
    def _stop(self, proc: subprocess.Popen[bytes], name: str, grace: float) -> None:
        if proc.poll() is not None:
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
        for k, proc in enumerate(self.workers):
            self._stop(proc, f"worker {k}", 20)
        if self.graph is not None:
            self.graph.stop()
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
            log(f"kept: database {self.db_name}, Redis db {self.args.redis_db}, worker logs in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    growth = r["memory_after_mb"] - r["memory_before_mb"]
    all_sent = r["missing"] == 0 and r["accepted"] - r["duplicates"] == r["recipients"]
    at_target = r["recipients"] / TARGET_RATE
    layout = f"{args.workers} worker processes x {args.threads} threads"
    rows = [
        ("materialise", f"{r['materialise_s']:.2f} s",
         f"target ≤ {TARGET_MATERIALISE_S:.0f} s: {verdict(r['materialise_s'] <= TARGET_MATERIALISE_S)}"),
        ("send wall time", f"{r['send_wall_s']:.1f} s",
         f"first to last accepted send ({at_target:.0f} s at exactly {TARGET_RATE}/s)"),
        ("sends per second", f"{r['median_rate']:.1f}",
         f"median of {r['buckets']} whole 1 s buckets (mean {r['mean_rate']:.1f}, lowest {r['min_rate']}, "
         f"{r['slow_seconds']} s below {0.9 * TARGET_RATE:.0f}); "
         f"target {TARGET_RATE}: {verdict(r['median_rate'] >= 0.97 * TARGET_RATE)}"),
        ("max in any 1 s", f"{r['max_window']}",
         f"accepted, by the emulator's arrival times ({r['max_window_tried']} counting refused attempts)"),
        ("130429 answers", f"{r['refused']}", f"target 0: {verdict(r['refused'] == 0)}"),
        ("duplicates", f"{r['duplicates']}",
         f"a phone accepted more than once; target 0: {verdict(r['duplicates'] == 0)}"),
        ("every recipient", f"{r['accepted'] - r['duplicates']:,}",
         f"of {r['recipients']:,} accepted ({r['missing']} missing, {r['unexpected']} unknown phones): "
         f"{verdict(all_sent)}"),
        ("Redis used_memory", f"{r['memory_before_mb']:.1f} → {r['memory_after_mb']:.1f} MB",
         f"+{growth:.1f} MB (peak {r['memory_peak_mb']:.1f} MB, {r['redis_keys']} keys at the end); "
         f"target growth ≤ {TARGET_REDIS_GROWTH_MB:.0f} MB: {verdict(growth <= TARGET_REDIS_GROWTH_MB)}"),
        ("queue at the end", f"{r['pending']}", f"pending ({r['scheduled']} scheduled)"),
    ]  # fmt: skip
    cpu = r["cpu"]
    seconds = max(cpu["total"] / (os.cpu_count() or 1), 1.0)  # the wall time between the two snapshots
    cores = " / ".join(f"{cpu[key] / seconds:.2f}" for key in ("workers", "pg", "redis", "this"))
    idle = (cpu["total"] - cpu["busy"]) / seconds
    log("")
    log(f"broadcast {r['status']} {r['done_s']:.0f} s after it was created; {layout}")
    for label, value, note in rows:
        log(f"{label:<18} {value:>14}   {note}")
    log(f"database: outbox {r['outbox']}, messages {r['messages']}, recipients {r['recipient_states']}")
    log(f"          {r['retried_rows']} outbox rows took more than one attempt (max {r['max_attempts']})")
    log(
        f"CPU, cores averaged over the run: workers / PostgreSQL (all databases) / Redis / this process "
        f"(emulator) = {cores}; {cpu['workers'] * 1000 / max(r['accepted'], 1):.1f} ms of worker CPU per "
        f"send; the machine {cpu['busy'] / seconds:.2f} busy, {idle:.2f} idle of {os.cpu_count()}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--leads", type=int, default=100_000, help="opted-in leads, all in the audience")
    p.add_argument("--workers", type=int, default=2, help="`flask crm worker` processes")
    p.add_argument("--threads", type=int, default=4, help="threads per worker process")
    p.add_argument("--throughput", type=int, default=TARGET_RATE, help="the emulator's sends per second")
    p.add_argument("--db-name", default="bench_broadcast", help="PostgreSQL database (dropped and recreated)")
    p.add_argument("--redis-db", type=int, default=14, help="Redis database (flushed)")
    p.add_argument("--keep", action="store_true", help="keep the database, Redis db and worker logs")
    p.add_argument(
        "--materialise-only",
        type=int,
        default=0,
        metavar="N",
        help="only time writing the recipients, N broadcasts in a row (no workers, nothing sent)",
    )
    args = p.parse_args(argv)
    if args.leads < 1 or args.workers < 1 or args.threads < 1 or args.throughput < 1:
        p.error("--leads, --workers, --threads and --throughput must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT as well: a shell that starts this script in the background makes it ignore SIGINT.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    started = time.monotonic()
    try:
        bench.preflight()
        bench.setup()
        if args.materialise_only:
            bench.materialise_only(args.materialise_only)
            return 0
        bench.start_workers()
        result = bench.run()
        report(result, args)
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        bench.cleanup()
        log(f"total time {time.monotonic() - started:.0f} s")
    intact = result["missing"] == 0 and result["duplicates"] == 0 and result["unexpected"] == 0
    return 0 if intact else 1


if __name__ == "__main__":
    sys.exit(main())
