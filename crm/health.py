"""Health endpoints, unauthenticated and cheap: liveness, readiness, Prometheus metrics.

- ``GET /healthz``: liveness of this web process; 503 only when the database can't be reached.
- ``GET /readyz``: can the whole system do its job? The database, Redis (scaled mode), a live
  queue consumer for every queue, and a live WebQR gateway when there are WebQR numbers. Each
  check says what failed and why, in a sentence (never an exception's text or a host name).
- ``GET /metrics``: Prometheus text format (``crm/ops/scrape.py``), for METRICS_TOKEN bearers
  or, without a token, internal addresses.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Blueprint, Flask, current_app, jsonify
from flask.blueprints import BlueprintSetupState
from flask_babel import gettext as _
from sqlalchemy import Integer, Select, literal_column, select
from sqlalchemy.exc import SQLAlchemyError

from crm.db import utcnow
from crm.errors import json_error
from crm.extensions import db
from crm.ops import heartbeat, metrics, recent_errors, scrape

bp = Blueprint("health", __name__)

Check = dict[str, Any]


def _setup_ops(state: BlueprintSetupState) -> None:
    """Every process builds its app through here: capture its warnings, time its webhooks."""
    recent_errors.install_handler()
    metrics.instrument(cast(Flask, state.app))


bp.record_once(_setup_ops)


# The database's check: a SELECT built by SQLAlchemy, so that the request's transaction counts as
# one that only read and keeps the connection's prepared statements (crm/pg.py); a text statement
# ended it with a rollback, which made psycopg drop them all, every 10 s in compose.yaml.
ALIVE: Select[tuple[int]] = select(literal_column("1", Integer))


@bp.get("/healthz")
def healthz() -> Any:
    """Liveness: answers 503 when the database can't be reached."""
    try:
        db.session.execute(ALIVE)
    except SQLAlchemyError:
        db.session.rollback()
        return json_error(503, "database_unavailable", "The database is unreachable.")
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> Any:
    checks: dict[str, Check] = {"database": _check_database(), "redis": _check_redis()}
    if checks["database"]["status"] == "ok":
        checks["worker"] = _guarded(_check_worker)
        checks["gateway"] = _guarded(_check_gateway)
    else:
        unknown = {"status": "unknown", "reason": _("It needs the database to tell.")}
        checks["worker"], checks["gateway"] = dict(unknown), dict(unknown)
    failed = [name for name, check in checks.items() if check["status"] == "fail"]
    if not failed:
        return {"status": "ready", "checks": checks}
    body = {
        "status": "not_ready",
        "failed": failed,
        "checks": checks,
        "error": {
            "code": "not_ready",
            "message": _("Not ready: %(checks)s.", checks=", ".join(failed)),
        },
    }
    response = jsonify(body)
    response.status_code = 503
    return response


@bp.get("/metrics")
def prometheus_metrics() -> Any:
    if not scrape.scrape_allowed():
        return json_error(
            403,
            "forbidden",
            _("Metrics are served to internal addresses, or with the METRICS_TOKEN as a bearer token."),
        )
    return scrape.exposition()


# --- the checks ------------------------------------------------------------------------------


def _guarded(check: Any) -> Check:
    try:
        result: Check = check()
    except SQLAlchemyError as exc:
        db.session.rollback()
        return {
            "status": "fail",
            "reason": _("The database failed (%(error)s).", error=exc.__class__.__name__),
        }
    return result


def _check_database() -> Check:
    try:
        db.session.execute(ALIVE)
    except SQLAlchemyError as exc:
        db.session.rollback()
        return {
            "status": "fail",
            "reason": _("The database is unreachable (%(error)s).", error=exc.__class__.__name__),
        }
    return {"status": "ok"}


def _check_redis() -> Check:
    if not current_app.config.get("REDIS_URL"):
        return {"status": "skipped", "reason": _("Embedded mode: no Redis.")}
    from crm.ops.probes import quick_redis

    try:
        quick_redis().ping()
    except Exception as exc:
        return {
            "status": "fail",
            "reason": _("Redis does not answer (%(error)s).", error=exc.__class__.__name__),
        }
    return {"status": "ok"}


def _freshness(rows: list[heartbeat.Heartbeat]) -> Check:
    newest = max(row.seen_at for row in rows)
    return {
        "processes": len(rows),
        "last_seen": newest.isoformat(),
        "age_seconds": round(max(0.0, (utcnow() - newest).total_seconds()), 1),
    }


def _stale(kind_rows: list[heartbeat.Heartbeat], kind: str) -> Check:
    seconds = int(heartbeat.stale_after().total_seconds())
    if kind == heartbeat.GATEWAY:
        reason = _("No WebQR gateway has reported in the last %(seconds)d seconds.", seconds=seconds)
    else:
        reason = _("No queue consumer has reported in the last %(seconds)d seconds.", seconds=seconds)
    check: Check = {"status": "fail", "reason": reason, "last_seen": None}
    if kind_rows:
        check["last_seen"] = max(row.seen_at for row in kind_rows).isoformat()
    return check


def _check_worker() -> Check:
    """A consumer of each queue beat recently (embedded mode: the in-process one). Tasks that run
    inline (HUEY_IMMEDIATE, tests) need none."""
    if current_app.config.get("HUEY_IMMEDIATE"):
        return {"status": "skipped", "reason": _("Tasks run inline: there is no queue.")}
    from crm.worker import ai_huey, huey

    live = heartbeat.fresh(heartbeat.WORKER)
    if not live:
        return _stale(heartbeat.heartbeats(heartbeat.WORKER), heartbeat.WORKER)
    served = {queue for row in live for queue in (row.info or {}).get("queues", {})}
    missing = [queue.name for queue in (huey, ai_huey) if queue.name not in served]
    if missing:
        return {
            "status": "fail",
            "reason": _("No live consumer of the queue %(queue)s.", queue=", ".join(missing)),
            **_freshness(live),
        }
    return {"status": "ok", **_freshness(live)}


def _check_gateway() -> Check:
    """Needed only when some workspace has a WebQR number in use."""
    from crm.whatsapp.models import WhatsAppAccount

    webqr = db.session.scalar(
        select(WhatsAppAccount.id)
        .where(WhatsAppAccount.provider == "webqr", WhatsAppAccount.status == "active")
        .limit(1)
    )
    if webqr is None:
        return {"status": "skipped", "reason": _("No WebQR numbers.")}
    live = heartbeat.fresh(heartbeat.GATEWAY)
    if not live:
        return _stale(heartbeat.heartbeats(heartbeat.GATEWAY), heartbeat.GATEWAY)
    if not any((row.info or {}).get("webqr", True) for row in live):
        return {
            "status": "fail",
            "reason": _("The gateway runs but cannot load WhatsApp Web (neonize) on its machine."),
            **_freshness(live),
        }
    return {"status": "ok", **_freshness(live)}
