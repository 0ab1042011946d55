"""Cloud API webhooks: GET verification and signed POSTs, answered 200 only after the commit."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Response, request

from crm.errors import json_error
from crm.logs import bind_workspace
from crm.whatsapp import bp
from crm.whatsapp.accounts import check_signature, check_verify_token, webhook_target
from crm.whatsapp.cloud_parser import parse_cloud_webhook
from crm.whatsapp.inbound import ingest

log = logging.getLogger(__name__)


@bp.get("/cloud/<key>")
def verify_cloud(key: str) -> Any:
    account = webhook_target(key)
    bind_workspace(account.workspace_id)  # its log lines say whose webhook it was
    if request.args.get("hub.mode") != "subscribe" or not check_verify_token(
        account, request.args.get("hub.verify_token", "")
    ):
        return json_error(403, "forbidden", "The verify token does not match.")
    return Response(request.args.get("hub.challenge", ""), mimetype="text/plain")


@bp.post("/cloud/<key>")
def receive_cloud(key: str) -> Any:
    started = time.monotonic()
    account = webhook_target(key)
    bind_workspace(account.workspace_id)  # its log lines say whose webhook it was
    body = request.get_data(cache=False)  # the raw bytes: the signature covers exactly these
    if not check_signature(account, body, request.headers.get("X-Hub-Signature-256")):
        log.warning("webhook for account %s: missing or wrong signature", account.id)
        return json_error(401, "invalid_signature", "Missing or wrong X-Hub-Signature-256.")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return json_error(400, "invalid_json", "The body is not JSON.")
    account_id = account.id
    parsed = parse_cloud_webhook(payload)
    for where, reason in parsed.ignored:
        log.info("webhook for account %s: ignored %s (%s)", account_id, where, reason)
    summary = ingest(account, parsed)
    log.info(
        "webhook account=%s stored=%d duplicates=%d statuses=%d signals=%d in %.1f ms",
        account_id,
        len(summary.stored),
        summary.duplicates,
        summary.statuses,
        summary.signals,
        (time.monotonic() - started) * 1000,
    )
    return {"status": "ok"}
