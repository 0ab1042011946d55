"""Background tasks with Huey: Redis when REDIS_URL is set, a SQLite file otherwise.

One module-level Huey object so tasks can be declared at import time; the app factory points
it at the right storage. Every task runs in a fresh app context (see ``in_app_context``), takes
ids rather than ORM objects, and is enqueued only after the transaction that asked for it
committed (``enqueue_after_commit``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, current_app, has_app_context
from huey import Huey, crontab
from huey.api import TaskWrapper
from huey.consumer import Consumer
from huey.storage import PriorityRedisStorage, SqliteStorage

from crm.db import after_commit

log = logging.getLogger(__name__)

# results=False: nobody reads a task's return value, and stored results are what makes a Redis
# queue grow without bound (100,000 sends would leave 100,000 result keys behind).
huey = Huey("zapdesk", storage_class=SqliteStorage, filename=":memory:", immediate=True, results=False)
# AI replies have a queue (and consumer threads) of their own: a backlog of answers waiting on
# Gemini's rate limits never delays a send.
ai_huey = Huey("zapdesk-ai", storage_class=SqliteStorage, filename=":memory:", immediate=True, results=False)
_app: dict[str, Flask] = {}

F = TypeVar("F", bound=Callable[..., Any])


def setup_worker(app: Flask) -> None:
    """Point the queue at Redis, at the embedded SQLite file, or run tasks inline (tests)."""
    cfg = app.config
    for queue, sqlite_path in ((huey, cfg["HUEY_SQLITE_PATH"]), (ai_huey, _ai_queue_path(cfg))):
        if cfg["HUEY_IMMEDIATE"]:
            queue.immediate = True
            continue
        if cfg["REDIS_URL"]:
            # A priority queue: a broadcast's dispatcher tick goes before the deliveries it queued
            # a moment ago, instead of waiting behind them (bench/broadcast.py).
            queue.storage_class = PriorityRedisStorage
            queue.storage_kwargs = {"url": cfg["REDIS_URL"]}
        else:
            queue.storage_class = SqliteStorage
            queue.storage_kwargs = {"filename": sqlite_path}
        queue.immediate = False
        queue.storage = queue.create_storage()  # the storage class may have changed
        if cfg["REDIS_URL"] and queue is huey:
            _drop_plain_queue()
    _app["app"] = app


def _ai_queue_path(cfg: dict[str, Any]) -> str:
    """The AI queue's SQLite file, beside the main one (a file of its own: no lock shared)."""
    main = cfg["HUEY_SQLITE_PATH"]
    stem, dot, ext = main.rpartition(".")
    return f"{stem}-ai.{ext}" if dot else f"{main}-ai"


def _drop_plain_queue() -> None:
    """An earlier version kept the queue as a Redis list under the same key; the priority queue
    is a sorted set. Drop the list (the database is the truth: the reconciler enqueues again what
    it held) rather than fail on it."""
    storage = huey.storage
    try:
        if storage.conn.type(storage.queue_key) == b"list":
            storage.conn.delete(storage.queue_key)
            log.warning("queue: the old list-based queue was dropped; the reconciler refills it")
    except Exception as exc:  # Redis down at start: the queue itself will say so when used
        log.warning("queue: could not check the queue's type: %s", exc)


def task_app() -> Flask:
    """The app tasks run in: the current one when a task runs inline, else the worker's."""
    if has_app_context():
        return current_app._get_current_object()  # type: ignore[attr-defined]
    return _app["app"]


def in_app_context(func: F) -> F:
    """Run a task inside its own app context, so no session leaks from one task to the next."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from crm.extensions import db
        from crm.logs import task_context

        # Every log line of the task says which task it is (its request id, if it runs inline).
        with task_context(f"{func.__module__}.{func.__name__}"), task_app().app_context():
            try:
                return func(*args, **kwargs)
            finally:
                db.session.remove()

    return wrapper  # type: ignore[return-value]


def enqueue_after_commit(task: TaskWrapper, *args: Any, priority: int | None = None) -> None:
    """Send ``task(*args)`` to the queue once the current transaction has committed (``priority``:
    taken before lower ones where the queue has priorities; the task's own by default)."""
    if priority is None:
        after_commit(lambda: task(*args))
    else:
        after_commit(lambda: task.huey.enqueue(task.s(*args, priority=priority)))


# How long a thread that computes may keep the GIL while another wants it (Python's default: 5
# ms). Threads that wait on PostgreSQL or Redis need it back each time an answer comes in; beside
# a thread that computes (an import's reader checking rows, a photo being resized) each of them
# may wait up to 5 ms at every step. A 1M-row import's merge threads spent 14.7-16.1 s of ~39 s
# staging and COPYing parts that take milliseconds in psql; with 0.5 ms turns, 2.6-2.9 s, and the
# import took 0.86x the time for the same CPU (bench/import_leads.py, alternating). Not for the
# web processes: their threads mostly compute, and shorter turns made pages slower.
THREAD_TURN_SECONDS = 0.0005


def tune_task_process() -> None:
    """What ``flask crm worker`` sets up at start: shorter GIL turns, fewer malloc arenas."""
    sys.setswitchinterval(THREAD_TURN_SECONDS)
    limit_malloc_arenas()


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Fewer glibc malloc arenas for a process whose threads decode photos: by default each thread
    may get its own arena, and freed image buffers stay in them (4 task threads preparing photos
    peaked at 240 MB, 185 MB with two arenas; bench/media.py). No-op off glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
        if mallopt is not None and "MALLOC_ARENA_MAX" not in os.environ:
            mallopt(-8, arenas)  # M_ARENA_MAX
    except OSError:
        pass


class InProcessConsumer(Consumer):
    """A consumer that runs on threads inside another process (``flask crm serve``).

    Huey's own consumer installs signal handlers; inside the web server those belong to the
    server, so this one leaves them alone and is stopped explicitly.
    """

    def _set_signal_handlers(self) -> None:
        pass


def start_in_process_consumer(workers: int, queue: Huey | None = None) -> Consumer:
    queue = queue or huey
    # The AI queue has no periodic tasks of its own (the main queue's reconciler feeds it).
    consumer = InProcessConsumer(queue, workers=workers, worker_type="thread", periodic=queue is huey)
    consumer.start()  # starts the scheduler and worker threads, then returns
    log.info("in-process task consumer started with %d threads (queue %s)", workers, queue.name)
    return consumer


# --- heartbeats: each consumer thread says it runs (crm/ops/heartbeat.py) ----------------------


def _heartbeat_hooks(queue: Huey) -> None:
    """Huey calls these in each of a consumer's worker threads as it starts and stops, whether the
    consumer is ``flask crm worker`` or the in-process one of embedded mode."""

    @queue.on_startup(name="heartbeat")
    def _consumer_started() -> None:
        from crm.ops.heartbeat import consumer_started

        consumer_started(queue.name, task_app())

    @queue.on_shutdown(name="heartbeat")
    def _consumer_stopped() -> None:
        from crm.ops.heartbeat import consumer_stopped

        consumer_stopped(task_app())


_heartbeat_hooks(huey)
_heartbeat_hooks(ai_huey)


# --- periodic housekeeping -------------------------------------------------------------------


@huey.periodic_task(crontab(minute="17"))
@in_app_context
def purge_stale_auth_rows() -> int:
    from crm.auth.services import purge_stale_auth_rows as purge

    return purge()


@huey.periodic_task(crontab(hour="2", minute="11"))
@in_app_context
def create_message_partitions() -> list[str]:
    """Daily: the monthly partitions of ``messages`` exist months before they are needed."""
    from crm.ops.partitions import ensure_partitions

    return ensure_partitions()


@huey.periodic_task(crontab(minute="23"))
def clean_queue_leftovers() -> int:
    """Hourly: drop whatever the queue kept after its jobs finished (results left by an older
    version or a task run by hand), so Redis holds only jobs waiting to run."""
    left = huey.storage.result_store_size()
    if left:
        huey.storage.flush_results()
        log.info("queue: %d leftover results removed", left)
    return left
