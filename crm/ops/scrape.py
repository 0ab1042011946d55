"""``GET /metrics``: who may scrape, and the Prometheus text exposition.

Counters come from ``crm/ops/metrics.py`` (summed over every process); gauges are read here, at
scrape time, from small tables (numbers, heartbeats, the due end of the outbox index), the
queues' own counts and Redis ``INFO memory``. Nothing here reads ``messages``.

Who: with METRICS_TOKEN set, only ``Authorization: Bearer <token>``; without it, only clients on
loopback or private addresses, as the app sees them after ProxyFix (TRUSTED_PROXIES).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Iterator

from flask import Response, current_app, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from crm.db import utcnow
from crm.extensions import db
from crm.ops.metrics import WEBHOOK_BUCKETS, counters

log = logging.getLogger(__name__)

PREFIX = "zapdesk"

# --- who may scrape ------------------------------------------------------------------------------

# Private networks in the usual sense, spelled out: Python's ``is_private`` also says yes to the
# documentation and benchmarking ranges, which are not anyone's internal network.
INTERNAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # carrier-grade NAT: container and VPN networks use it
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)


def client_is_internal() -> bool:
    """The client's address (after ProxyFix, when TRUSTED_PROXIES says there are proxies) is a
    loopback or private one. With no trusted proxy, a request carrying forwarding headers came
    through a proxy we were not told about: the address we see is the proxy's, and says nothing
    about the client, so it is not taken as internal."""
    if not current_app.config.get("TRUSTED_PROXIES") and any(
        h in request.headers for h in ("X-Forwarded-For", "Forwarded", "X-Real-Ip")
    ):
        return False
    try:
        address = ipaddress.ip_address((request.remote_addr or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or any(address in network for network in INTERNAL_NETWORKS)


def scrape_allowed() -> bool:
    """METRICS_TOKEN set: only ``Authorization: Bearer <token>``. Unset: only internal clients."""
    token = current_app.config.get("METRICS_TOKEN")
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), str(token).encode())
    return client_is_internal()


# --- the exposition --------------------------------------------------------------------------------

_COUNTERS = {
    # stored name: (exposed name without _total, help, label names)
    "inbound_messages": (
        "inbound_messages",
        "Inbound messages by provider; status stored, or duplicate (already stored, or unusable).",
        ("provider", "status"),
    ),
    "message_statuses": (
        "message_statuses",
        "Delivery statuses received from providers (sent, delivered, read, played, failed...).",
        ("provider", "status"),
    ),
    "outbound_messages": (
        "outbound_messages",
        "Outbound messages that reached an end: sent, failed or cancelled.",
        ("provider", "status"),
    ),
    "account_sends": (
        "account_sends",
        "Messages sent per number (rate() of it is the send rate).",
        ("account_id", "provider"),
    ),
    "send_errors": (
        "send_errors",
        "Send attempts a provider refused or failed, by error code.",
        ("provider", "code"),
    ),
    "webhook_requests": ("webhook_requests", "Cloud API webhook POSTs by HTTP status.", ("code",)),
    "task_failures": ("task_failures", "Queue tasks that raised (each failed attempt).", ("queue", "task")),
}


class _Families:
    """A collector of families built once per scrape."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def exposition() -> Response:
    families: list[Metric] = []
    database = GaugeMetricFamily(f"{PREFIX}_database_up", "1 when the database answered this scrape.")
    try:
        families += _counter_families(counters())
        families += _database_gauges()
        database.add_metric([], 1)
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning("metrics: database unreachable: %s", exc.__class__.__name__)
        database.add_metric([], 0)
    families.append(database)
    families += _queue_and_redis_gauges()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    response = Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_PLAIN_0_0_4)
    response.headers["Cache-Control"] = "no-store"
    return response


def _counter_families(totals: dict[tuple[str, str], float]) -> list[Metric]:
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    for (name, key), value in totals.items():
        by_name.setdefault(name, []).append((json.loads(key), value))
    families: list[Metric] = []
    for stored, (exposed, doc, label_names) in _COUNTERS.items():
        family = CounterMetricFamily(f"{PREFIX}_{exposed}", doc, labels=label_names)
        for found, value in sorted(by_name.get(stored, []), key=lambda item: sorted(item[0].items())):
            family.add_metric([found.get(n, "") for n in label_names], value)
        families.append(family)
    counts = {found.get("le", ""): value for found, value in by_name.get("webhook_duration_bucket", [])}
    cumulative, buckets = 0.0, []
    for le in [*(str(b) for b in WEBHOOK_BUCKETS), "+Inf"]:
        cumulative += counts.get(le, 0.0)
        buckets.append((le, cumulative))
    total = sum(value for _labels, value in by_name.get("webhook_duration_sum", []))
    families.append(
        HistogramMetricFamily(
            f"{PREFIX}_webhook_duration_seconds",
            "Time to answer a Cloud API webhook POST (verify, store, commit).",
            buckets=buckets,
            sum_value=total,
        )
    )
    return families


def _database_gauges() -> list[Metric]:
    from crm.ops import heartbeat
    from crm.whatsapp.models import Health, Outbox, OutboxState, WhatsAppAccount

    now = utcnow()
    oldest = db.session.scalar(
        select(func.min(Outbox.next_attempt_at)).where(
            Outbox.state == OutboxState.QUEUED.value, Outbox.next_attempt_at <= now
        )
    )
    waiting = GaugeMetricFamily(
        f"{PREFIX}_oldest_queued_send_age_seconds",
        "How long the oldest send that is due has been waiting (0: none waiting).",
    )
    waiting.add_metric([], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)

    labels = ("account_id", "workspace_id", "provider")
    health = GaugeMetricFamily(
        f"{PREFIX}_account_health",
        "Each number's health as a state set: 1 for its current health, 0 for the others.",
        labels=(*labels, "health"),
    )
    paused = GaugeMetricFamily(
        f"{PREFIX}_account_paused",
        "1 while a number waits after its provider asked to slow down.",
        labels=labels,
    )
    enabled = GaugeMetricFamily(
        f"{PREFIX}_account_enabled", "1 for a number in use, 0 for one an admin switched off.", labels=labels
    )
    accounts = db.session.execute(
        select(
            WhatsAppAccount.id,
            WhatsAppAccount.workspace_id,
            WhatsAppAccount.provider,
            WhatsAppAccount.health,
            WhatsAppAccount.status,
            WhatsAppAccount.paused_until,
        ).order_by(WhatsAppAccount.id)
    ).all()
    for account in accounts:
        values = [str(account.id), str(account.workspace_id), account.provider]
        for state in Health:
            health.add_metric([*values, state.value], 1 if account.health == state.value else 0)
        paused.add_metric(values, 1 if account.paused_until and account.paused_until > now else 0)
        enabled.add_metric(values, 1 if account.status == "active" else 0)

    live = GaugeMetricFamily(
        f"{PREFIX}_live_processes", "Processes whose heartbeat is fresh, by kind.", labels=("kind",)
    )
    age = GaugeMetricFamily(
        f"{PREFIX}_heartbeat_age_seconds",
        "Seconds since the newest heartbeat of each kind.",
        labels=("kind",),
    )
    for kind in (heartbeat.WORKER, heartbeat.GATEWAY):
        rows = heartbeat.heartbeats(kind)
        fresh = [row for row in rows if not heartbeat.is_stale(row, now)]
        live.add_metric([kind], len(fresh))
        if rows:
            age.add_metric([kind], max(0.0, (now - max(row.seen_at for row in rows)).total_seconds()))
    return [waiting, health, paused, enabled, live, age]


def _queue_and_redis_gauges() -> list[Metric]:
    """Queue depth from the queue itself; Redis memory from ``INFO memory`` (scaled mode). A Redis
    that does not answer within PROBE_TIMEOUT_SECONDS is reported down, and its queues skipped,
    rather than hanging the scrape."""
    from crm.ops.probes import redis_memory
    from crm.worker import ai_huey, huey

    families: list[Metric] = []
    queues_readable = True
    if current_app.config.get("REDIS_URL"):
        up = GaugeMetricFamily(f"{PREFIX}_redis_up", "1 when Redis answered this scrape.")
        try:
            memory = redis_memory()
        except Exception as exc:
            log.warning("metrics: Redis unreachable: %s", exc.__class__.__name__)
            up.add_metric([], 0)
            queues_readable = False
        else:
            up.add_metric([], 1)
            used = GaugeMetricFamily(f"{PREFIX}_redis_memory_used_bytes", "Redis used_memory.")
            used.add_metric([], memory.used)
            limit = GaugeMetricFamily(
                f"{PREFIX}_redis_memory_max_bytes",
                "Redis maxmemory (0: no limit), with its maxmemory-policy as a label.",
                labels=("policy",),
            )
            limit.add_metric([memory.policy], memory.maxmemory)
            families += [used, limit]
        families.append(up)
    if queues_readable:
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth",
            "Jobs in the task queues: waiting now, or scheduled.",
            labels=("queue", "state"),
        )
        try:
            for label, queue in (("main", huey), ("ai", ai_huey)):
                depth.add_metric([label, "pending"], queue.pending_count())
                depth.add_metric([label, "scheduled"], queue.scheduled_count())
        except Exception as exc:
            log.warning("metrics: queue unreachable: %s", exc.__class__.__name__)
        else:
            families.append(depth)
    return families
