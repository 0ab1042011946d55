"""Prometheus metrics: counters that add up across processes (the exposition: ``crm/ops/scrape.py``).

Counting across processes. gunicorn runs several web processes, workers are separate, and the
WebQR gateway is a process of its own even in embedded mode (a supervised child), so counters
kept in one process's memory would each tell a part. Counting at scrape time from the data is
out too: ``messages`` may hold tens of millions of rows. So:

- the hot paths (webhook ingest at 400 req/s, deliveries) only add to a dict in their own
  process: one lock and one addition, no I/O;
- each process's background writer (``crm/ops/heartbeat.py``) adds those deltas to the shared
  ``metric_counters`` table every HEARTBEAT_SECONDS: one UPSERT of a few rows per process,
  whatever the traffic (``value = value + delta``, rows in key order so concurrent writers never
  deadlock);
- a scrape reads that small table, plus the deltas its own process has not written yet.

Why a table rather than Redis hashes or prometheus_client's multiprocess mode: one code path for
both modes (embedded mode has no Redis; the multiprocess directory only works for processes on
one machine and needs cleaning after each restart), counters survive restarts of any process and
of Redis (whose eviction policy might drop them), and the cost is bounded by processes, not
messages. The price: a scrape may miss up to one interval of other processes' counts, and the
counts of a process that is killed (not stopped) in that interval are lost; a stopped process
writes its last deltas on exit.

Gauges (queue depth, the oldest waiting send, each number's health, Redis memory, live
processes) are read at scrape time (``crm/ops/scrape.py``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from flask import Flask, Response, g, request
from sqlalchemy import Float, String, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import UTCDateTime, utcnow
from crm.extensions import Model, db

log = logging.getLogger(__name__)

WEBHOOK_ENDPOINT = "webhooks.receive_cloud"
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LABEL_MAX = 64  # keeps every key within the table's column, whatever a provider sends


class MetricCounter(Model):
    """One counter (a name and its labels as canonical JSON), summed over every process."""

    __tablename__ = "metric_counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    labels: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# --- counting, in this process ------------------------------------------------------------------

_lock = threading.Lock()
_pending: dict[tuple[str, str], float] = {}


def _labels(**labels: object) -> str:
    return _labels_key(tuple(labels.items()))


@functools.lru_cache(maxsize=4096)  # the same few label sets, again and again, on the hot path
def _labels_key(items: tuple[tuple[str, object], ...]) -> str:
    return json.dumps({k: str(v)[:_LABEL_MAX] for k, v in items}, sort_keys=True, separators=(",", ":"))


def _add(name: str, labels: str, amount: float = 1.0) -> None:
    with _lock:
        _pending[(name, labels)] = _pending.get((name, labels), 0.0) + amount


def record_ingest(provider: str, stored: int, duplicates: int, statuses: Iterable[str]) -> None:
    """One committed delivery: messages stored and not (already there), statuses received."""
    if stored:
        _add("inbound_messages", _labels(provider=provider, status="stored"), stored)
    if duplicates:
        _add("inbound_messages", _labels(provider=provider, status="duplicate"), duplicates)
    for status in statuses:
        _add("message_statuses", _labels(provider=provider, status=status))


def record_send(provider: str, account_id: int | None, status: str) -> None:
    """An outbound message reached its end here: ``sent``, ``failed`` or ``cancelled``."""
    _add("outbound_messages", _labels(provider=provider, status=status))
    if status == "sent":
        _add("account_sends", _labels(account_id=account_id or "", provider=provider))


def record_send_error(provider: str, code: str) -> None:
    """A provider refused or failed one attempt (it may be retried)."""
    _add("send_errors", _labels(provider=provider, code=code))


def record_task_failure(queue: str, task: str) -> None:
    _add("task_failures", _labels(queue=queue, task=task))


def observe_webhook(seconds: float, status_code: int) -> None:
    _add("webhook_requests", _labels(code=status_code))
    bucket = next((str(b) for b in WEBHOOK_BUCKETS if seconds <= b), "+Inf")
    _add("webhook_duration_bucket", _labels(le=bucket))
    _add("webhook_duration_sum", "{}", seconds)


def _watch_task_failures() -> None:
    """Count each failed task attempt, in whichever process ran it (huey's error signal)."""
    from huey.signals import SIGNAL_ERROR

    from crm.worker import ai_huey, huey

    for queue in (huey, ai_huey):

        def _on_error(signal: str, task: Any, *args: Any, queue_name: str = queue.name) -> None:
            record_task_failure(queue_name, getattr(task, "name", "") or "")

        queue.signal(SIGNAL_ERROR)(_on_error)


_watch_task_failures()


def instrument(app: Flask) -> None:
    """Time the Cloud API webhook, and start the process's writer with its first request."""
    from crm.ops.heartbeat import ensure_started

    @app.before_request
    def _webhook_started() -> None:
        ensure_started(app)
        if request.endpoint == WEBHOOK_ENDPOINT:
            g.metrics_webhook_started = time.perf_counter()

    @app.after_request
    def _webhook_finished(response: Response) -> Response:
        started = g.pop("metrics_webhook_started", None)
        if started is not None:
            observe_webhook(time.perf_counter() - started, response.status_code)
        return response


# --- sharing: this process's deltas into the table ---------------------------------------------


def flush() -> int:
    """Add this process's deltas to ``metric_counters`` and commit; on failure they are kept."""
    with _lock:
        batch = dict(_pending)
        _pending.clear()
    if not batch:
        return 0
    now = utcnow()
    rows = [{"name": n, "labels": lb, "value": v, "updated_at": now} for (n, lb), v in sorted(batch.items())]
    dialect = db.session.get_bind().dialect.name
    stmt: Any = (pg_insert if dialect == "postgresql" else sqlite_insert)(MetricCounter)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name", "labels"],
        set_={"value": MetricCounter.value + stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
    )
    try:
        db.session.execute(stmt, rows)
        db.session.commit()
    except Exception:
        db.session.rollback()
        with _lock:
            for key, value in batch.items():
                _pending[key] = _pending.get(key, 0.0) + value
        raise
    return len(rows)


def counters() -> dict[tuple[str, str], float]:
    """Every counter: the shared table plus what this process has not written yet."""
    totals: dict[tuple[str, str], float] = {
        (row.name, row.labels): float(row.value)
        for row in db.session.execute(select(MetricCounter.name, MetricCounter.labels, MetricCounter.value))
    }
    with _lock:
        for key, value in _pending.items():
            totals[key] = totals.get(key, 0.0) + value
    return totals


def forget_pending() -> None:
    """Drop this process's unwritten deltas (tests; a forked child)."""
    with _lock:
        _pending.clear()


def _forget_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    _pending.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
