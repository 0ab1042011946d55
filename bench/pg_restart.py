#!/usr/bin/env python3
"""Fault test: PostgreSQL restarted during a Cloud API webhook ingest run (issue 10).

    .venv/bin/python bench/pg_restart.py                   # 30 s at 100 req/s, restart at 10 s
    .venv/bin/python bench/pg_restart.py --rate 200 --restart-at 15

Scaled mode as in bench/ingest.py (it reuses its ``Bench`` setup): a fresh database
``bench_pgrestart``, Redis db 10, a Cloud number, ``gunicorn -k gthread`` plus ``flask crm worker``.
Signed Meta-shaped webhooks, one unique wamid each, are posted open-loop at a fixed rate; in the
middle ``pg_ctlcluster --skip-systemctl-redirect <version> main restart`` runs, while a thread polls
PostgreSQL (psycopg connect every 50 ms) to time when it went down and when it accepted again.

Targets:
1. outage: no webhook sent while PostgreSQL was down got a 200 (a 200 then would be an
   acknowledged message that may be lost); 5xx, timeouts and connection errors count as "not
   acknowledged", so Meta retries.
2. recovery: the first 200 comes at most 5 s after PostgreSQL accepts connections again, and every
   webhook sent after that point gets 200.
3. nothing acknowledged is lost: every 200-acked wamid is in ``messages`` exactly once; the non-200
   bodies are re-posted at the end (as Meta retries) and must then be stored exactly once too.

Exit status: 0 all targets met, 1 a target missed, 2 setup or environment error. PostgreSQL is
started again at the end if it is not answering, whatever happened.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness import HOST, PG_PORT, BenchError, cloud_webhook_body, meta_signature
from ingest import APP_SECRET, DISPLAY_PHONE, PHONE_NUMBER_ID, WABA_ID, Bench

RECOVERY_LIMIT_S = 5.0


def log(msg: str) -> None:
    print(msg, flush=True)


def pg_version() -> str:
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir() if p.is_dir())
    if not versions:
        raise BenchError("no cluster under /etc/postgresql")
    return versions[-1]


def pg_up() -> bool:
    import psycopg

    try:
        with psycopg.connect(
            host=HOST, port=PG_PORT, user="postgres", dbname="postgres", connect_timeout=1
        ) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def ensure_pg_running() -> None:
    if pg_up():
        return
    for _ in range(20):
        ready = subprocess.run(["pg_isready", "-h", HOST, "-p", str(PG_PORT)], capture_output=True)
        if ready.returncode == 0:
            return
        time.sleep(0.5)
    log("cleanup: PostgreSQL not answering; starting it")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", pg_version(), "main", "start"],
        capture_output=True,
        timeout=60,
    )
    log(f"cleanup: PostgreSQL {'up' if pg_up() else 'STILL DOWN'}")


def body_for(i: int, tag: str) -> tuple[bytes, str, str]:
    phone = f"55118{i % 200:08d}"
    wamid = f"wamid.pgrestart.{tag}.{i:06d}"
    contacts = [{"profile": {"name": f"Fault {i % 200}"}, "wa_id": phone}]
    message = {
        "from": phone,
        "id": wamid,
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": f"message {i}"},
    }
    body = cloud_webhook_body(WABA_ID, PHONE_NUMBER_ID, DISPLAY_PHONE, contacts, [message])
    sig = meta_signature(APP_SECRET, body)
    return body, sig, wamid


def post(netloc: str, path: str, body: bytes, sig: str, timeout: float) -> int:
    """HTTP status, -1 timeout, -2 connection error (both: not acknowledged)."""
    conn = http.client.HTTPConnection(netloc, timeout=timeout)
    try:
        conn.request(
            "POST", path, body=body, headers={"Content-Type": "application/json", "X-Hub-Signature-256": sig}
        )
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except TimeoutError:
        return -1
    except (OSError, http.client.HTTPException):
        return -2
    finally:
        conn.close()


class PgWatch(threading.Thread):
    """Polls PostgreSQL every 50 ms; records (time, up) transitions."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.changes: list[tuple[float, bool]] = []

    def run(self) -> None:
        last: bool | None = None
        while not self.stop.is_set():
            up = pg_up()
            if up != last:
                self.changes.append((time.monotonic(), up))
                last = up
            time.sleep(0.05)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--restart-at", type=float, default=10.0)
    p.add_argument("--senders", type=int, default=32)
    p.add_argument("--request-timeout", type=float, default=10.0)
    p.add_argument("--keep", action="store_true")
    a = p.parse_args()
    args = argparse.Namespace(
        db_name="bench_pgrestart", redis_db=10, log_level="INFO", threads=16, workers=2,
        pythonpath=None, app="wsgi:app", keep=a.keep,
    )  # fmt: skip
    bench = Bench(args)
    started = time.monotonic()
    try:
        bench.preflight()
        version = pg_version()
        bench.setup()
        bench.start()
        return run(bench, a, version)
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    finally:
        ensure_pg_running()
        bench.cleanup()
        log(f"total time {time.monotonic() - started:.0f} s")


def run(bench: Bench, a: argparse.Namespace, version: str) -> int:
    target = urlsplit(f"{bench.base}{bench.webhook_path}")
    netloc, path = target.netloc, target.path + (f"?{target.query}" if target.query else "")
    tag = f"{int(time.time())}"
    n = int(a.rate * a.seconds)
    bodies = [body_for(i, tag) for i in range(n)]
    status = [0] * n
    sent = [0.0] * n
    done = [0.0] * n
    work: queue.Queue[int | None] = queue.Queue()

    def sender() -> None:
        while (i := work.get()) is not None:
            sent[i] = time.monotonic()
            status[i] = post(netloc, path, bodies[i][0], bodies[i][1], a.request_timeout)
            done[i] = time.monotonic()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(a.senders)]
    for th in threads:
        th.start()
    watch = PgWatch()
    watch.start()
    restart: dict[str, Any] = {}

    def do_restart() -> None:
        restart["start"] = time.monotonic()
        out = subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        restart["end"], restart["rc"], restart["err"] = time.monotonic(), out.returncode, out.stderr.strip()

    restarter = threading.Timer(a.restart_at, do_restart)
    t0 = time.monotonic()
    restarter.start()
    log(f"load: {n} webhooks at {a.rate:.0f}/s for {a.seconds:.0f} s; restart at {a.restart_at:.0f} s")
    for i in range(n):
        delay = t0 + i / a.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        work.put(i)
    for _ in threads:
        work.put(None)
    for th in threads:
        th.join(a.request_timeout + 30)
    restarter.join(130)
    time.sleep(0.5)
    watch.stop.set()
    watch.join(5)
    if restart.get("rc") != 0:
        raise BenchError(f"pg_ctlcluster restart failed ({restart.get('rc')}): {restart.get('err')}")

    def rel(t: float) -> float:
        return t - t0

    downs = [t for t, up in watch.changes if not up]
    ups = [t for t, up in watch.changes if up]
    if not downs:
        raise BenchError("the watcher never saw PostgreSQL down (restart too fast to observe?)")
    down_at = downs[0]
    up_again = next((t for t in ups if t > down_at), None)
    if up_again is None:
        raise BenchError("PostgreSQL did not come back during the run")
    log(
        f"restart: command {rel(restart['start']):.2f}-{rel(restart['end']):.2f} s; "
        f"PostgreSQL refused connections {rel(down_at):.2f}-{rel(up_again):.2f} s "
        f"({up_again - down_at:.2f} s)"
    )

    # Per phase: sent before the outage / handled while down / after.
    codes = Counter(status)
    log(
        "statuses: "
        + ", ".join(f"{k}={v}" for k, v in sorted(codes.items()))
        + " (-1 timeout, -2 conn error)"
    )
    # A request overlapping the outage: sent before PostgreSQL came back and answered after it went down.
    during = [i for i in range(n) if sent[i] < up_again and done[i] > down_at]
    during_200 = [i for i in during if status[i] == 200]
    during_codes = Counter(status[i] for i in during)
    log(
        f"outage: {len(during)} requests overlapped it: "
        + ", ".join(f"{k}={v}" for k, v in sorted(during_codes.items()))
    )
    # A 200 during the outage is only a problem if its message is not stored: checked below.
    first_ok_after = min((done[i] for i in range(n) if status[i] == 200 and done[i] > up_again), default=None)
    recovery = (first_ok_after - up_again) if first_ok_after is not None else float("inf")
    # Every request sent after the recovery point must be 200.
    recovered_at = first_ok_after if first_ok_after is not None else float("inf")
    late_bad = [i for i in range(n) if sent[i] > recovered_at and status[i] != 200]
    non200 = [i for i in range(n) if status[i] != 200]
    if non200:
        log(
            f"non-200 window: sent {rel(min(sent[i] for i in non200)):.2f}-"
            f"{rel(max(sent[i] for i in non200)):.2f} s, answered {rel(min(done[i] for i in non200)):.2f}-"
            f"{rel(max(done[i] for i in non200)):.2f} s; "
            f"kinds: {dict(Counter(status[i] for i in non200))}"
        )
    if late_bad:
        log(f"after recovery, not 200: {len(late_bad)} e.g. " + ", ".join(
            f"#{i} sent {rel(sent[i]):.2f} s -> {status[i]}" for i in late_bad[:5]))  # fmt: skip

    acked = {bodies[i][2] for i in range(n) if status[i] == 200}
    all_wamids = {b[2] for b in bodies}

    def stored() -> Counter[str]:
        with bench.pg_bench() as conn:
            rows = conn.execute(
                "SELECT provider_message_id, count(*) FROM messages WHERE provider_message_id LIKE %s "
                "GROUP BY provider_message_id",
                (f"wamid.pgrestart.{tag}.%",),
            ).fetchall()
        return Counter({r[0]: int(r[1]) for r in rows})

    counts = stored()
    lost = sorted(w for w in acked if counts.get(w, 0) == 0)
    dup_acked = sorted(w for w in acked if counts.get(w, 0) > 1)
    stored_unacked = sum(1 for w in all_wamids - acked if counts.get(w, 0) > 0)
    log(
        f"data: {len(acked)} acked, {len(lost)} of them lost, {len(dup_acked)} duplicated; "
        f"{stored_unacked} of {len(all_wamids - acked)} non-acked stored anyway"
    )
    # Meta retries: re-post every non-200 body.
    retry_codes: Counter[int] = Counter()
    for i in non200:
        retry_codes[post(netloc, path, bodies[i][0], bodies[i][1], a.request_timeout)] += 1
    counts = stored()
    retry_missing = sorted(w for w in all_wamids if counts.get(w, 0) == 0)
    retry_dup = sorted(w for w in all_wamids if counts.get(w, 0) > 1)
    log(
        f"retries: {len(non200)} re-posted -> {dict(retry_codes)}; afterwards {len(retry_missing)} of {n} "
        f"wamids missing, {len(retry_dup)} stored more than once"
    )

    # The risk is a 200 *answered* while PostgreSQL refused connections for a message that is not stored.
    # A request sent during the outage that the app held until PostgreSQL was back, then stored and
    # answered 200, is correct behaviour.
    answered_down = [i for i in range(n) if down_at <= done[i] <= up_again]
    ok_down = [i for i in answered_down if status[i] == 200]
    ok_down_lost = [i for i in ok_down if counts.get(bodies[i][2], 0) == 0]
    held = [i for i in during_200 if done[i] > up_again]
    log(
        f"200s overlapping the outage: {len(during_200)} ({len(held)} answered after PostgreSQL was back, "
        f"{len(ok_down)} answered while it was down: "
        + ", ".join(f"#{i} {rel(sent[i]):.2f}->{rel(done[i]):.2f} s" for i in ok_down[:5])
        + ")"
    )
    t1 = not ok_down_lost and any(500 <= status[i] < 600 or status[i] < 0 for i in during)
    t2 = recovery <= RECOVERY_LIMIT_S and not late_bad
    t3 = (
        not lost
        and not ok_down_lost
        and not dup_acked
        and not retry_missing
        and not retry_dup
        and set(retry_codes) <= {200}
    )
    log("")
    log(
        f"[{'PASS' if t1 else 'FAIL'}] outage: no unstored 200 while PostgreSQL was down "
        f"({len(ok_down)} answered 200 while down, {len(ok_down_lost)} of them not stored; "
        f"{sum(1 for i in during if 500 <= status[i] < 600)} 5xx, "
        f"{sum(1 for i in during if status[i] < 0)} timeouts/connection errors)"
    )
    log(
        f"[{'PASS' if t2 else 'FAIL'}] recovery: first 200 {recovery:.2f} s after PostgreSQL accepted again "
        f"(limit {RECOVERY_LIMIT_S:.0f} s); {len(late_bad)} non-200 after that"
    )
    log(
        f"[{'PASS' if t3 else 'FAIL'}] nothing acknowledged lost: {len(lost)} lost, "
        f"{len(dup_acked)} duplicated of {len(acked)} acked; "
        f"after Meta-style retries {len(retry_missing)} missing, {len(retry_dup)} dup"
    )
    with contextlib.suppress(Exception):
        for name in ("gunicorn", "worker"):
            tail = bench._log_tail(name, 200)
            errs = [ln for ln in tail.splitlines() if "Error" in ln or "error" in ln]
            log(
                f"{name} log: {len(errs)} error lines in the last 200; "
                f"last: {errs[-1][:300] if errs else '-'}"
            )
    return 0 if (t1 and t2 and t3) else 1


if __name__ == "__main__":
    sys.exit(main())
