"""Gemini through the google-genai SDK: one request, its answer, or an error we can act on.

The SDK's own retries stay off (``retry_options`` unset): a task never sleeps on a 429, it is
rescheduled with the delay Gemini asked for (see ``crm.ai.replies``), so a backlog of AI work
never holds a worker thread. ``GEMINI_BASE_URL`` points the SDK at another endpoint (a local
stub in the tests).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from google import genai
from google.genai import errors, types

log = logging.getLogger(__name__)

_clients: dict[tuple[str, str | None, int], genai.Client] = {}
_clients_lock = threading.Lock()

# The answer's shape: what to tell the customer, and whether a person should take over.
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "reply": {"type": "string", "description": "The message to send to the customer."},
        "handoff": {
            "type": "boolean",
            "description": "True when the customer asks for a person or needs one to go on.",
        },
    },
    "required": ["reply", "handoff"],
}


@dataclass(frozen=True)
class Turn:
    role: str  # "user" (the customer) or "model" (the business)
    text: str


@dataclass(frozen=True)
class Answer:
    reply: str
    handoff: bool


class GeminiError(Exception):
    """A request that gave no answer. ``kind`` is one of: rate_limited, daily_quota, server,
    timeout, network, malformed (cut short or not the JSON asked for), auth, bad_request,
    blocked, empty. ``retry_after`` is Gemini's own delay
    (RetryInfo) when it gave one."""

    RETRYABLE = frozenset({"rate_limited", "server", "timeout", "network", "malformed"})

    def __init__(self, kind: str, detail: str = "", retry_after: float | None = None):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail[:500]
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in self.RETRYABLE


def client_for(api_key: str, base_url: str | None, timeout_seconds: float) -> genai.Client:
    """One SDK client per key and endpoint, shared by the worker's threads (its HTTP pool is)."""
    timeout_ms = max(1, round(timeout_seconds * 1000))
    key = (api_key, base_url, timeout_ms)
    with _clients_lock:
        found = _clients.get(key)
        if found is None:
            options = types.HttpOptions(timeout=timeout_ms, base_url=base_url) if base_url else None
            if options is None:
                options = types.HttpOptions(timeout=timeout_ms)
            found = _clients[key] = genai.Client(api_key=api_key, http_options=options)
        return found


def generate(
    api_key: str,
    base_url: str | None,
    model: str,
    system: str,
    turns: list[Turn],
    timeout_seconds: float,
    structured: bool = True,
) -> Answer:
    """Ask for the business's next message. ``structured``: the answer is JSON with a hand-off
    flag; otherwise plain text (a draft for an agent)."""
    contents = [types.Content(role=t.role, parts=[types.Part(text=t.text)]) for t in turns]
    config = types.GenerateContentConfig(
        system_instruction=system,
        # No max_output_tokens: on thinking models the thoughts count against it, and a cap cuts
        # the answer short (the prompt asks for brevity; replies are cut at WhatsApp's limit).
        temperature=0.4,
        response_mime_type="application/json" if structured else None,
        response_schema=ANSWER_SCHEMA if structured else None,
    )
    client = client_for(api_key, base_url, timeout_seconds)
    try:
        response = client.models.generate_content(model=model, contents=contents, config=config)
    except errors.APIError as exc:
        raise _classified(exc) from exc
    except Exception as exc:  # the HTTP client's own errors: timeouts, refused connections
        name = exc.__class__.__name__
        kind = "timeout" if "timeout" in name.lower() or "timed out" in str(exc).lower() else "network"
        raise GeminiError(kind, f"{name}: {exc}") from exc
    return _answer(response, structured)


def _answer(response: types.GenerateContentResponse, structured: bool) -> Answer:
    candidates = response.candidates or []
    finish = str(candidates[0].finish_reason or "") if candidates else ""
    try:
        text = (response.text or "").strip()
    except ValueError:
        text = ""
    if not text:
        blocked = response.prompt_feedback is not None and response.prompt_feedback.block_reason
        if blocked or "SAFETY" in finish or "PROHIBITED" in finish:
            raise GeminiError("blocked", finish or "prompt blocked")
        raise GeminiError("empty", finish or "no text in the answer")
    if "MAX_TOKENS" in finish:
        raise GeminiError("malformed", "the answer was cut short (MAX_TOKENS)")
    if not structured:
        return Answer(text, False)
    try:
        data = json.loads(text)
    except ValueError:
        if text.startswith(("{", "[", "```")):
            raise GeminiError("malformed", "the answer is not valid JSON") from None
        return Answer(text, False)  # asked for JSON, got prose: still an answer
    if not isinstance(data, dict):
        raise GeminiError("malformed", "the answer is not a JSON object")
    reply = data.get("reply")
    reply = reply.strip() if isinstance(reply, str) else ""
    handoff = data.get("handoff") is True
    if not reply and not handoff:
        raise GeminiError("empty", "the answer had no reply")
    return Answer(reply, handoff)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _classified(exc: errors.APIError) -> GeminiError:
    code = exc.code or 0
    detail = f"{code} {exc.status or ''} {exc.message or ''}".strip()
    if code == 429:
        retry_after, quota_ids = _quota_details(exc.details)
        if any("perday" in q.lower() for q in quota_ids):
            return GeminiError("daily_quota", detail, retry_after)
        return GeminiError("rate_limited", detail, retry_after)
    if code in (401, 403) or (code == 400 and "API_KEY" in json.dumps(exc.details or {})):
        return GeminiError("auth", detail)
    if code == 408 or code == 504:
        return GeminiError("timeout", detail)
    if code >= 500:
        return GeminiError("server", detail)
    return GeminiError("bad_request", detail)


def _quota_details(details: Any) -> tuple[float | None, list[str]]:
    """RetryInfo's delay (seconds) and the QuotaFailure's quota ids of a 429's error body."""
    error = details.get("error", details) if isinstance(details, dict) else {}
    items = error.get("details") if isinstance(error, dict) else None
    retry_after: float | None = None
    quota_ids: list[str] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        kind = str(item.get("@type", ""))
        if kind.endswith("RetryInfo"):
            match = _DURATION.match(str(item.get("retryDelay", "")))
            if match:
                retry_after = float(match.group(1))
        elif kind.endswith("QuotaFailure"):
            for violation in item.get("violations") or []:
                if isinstance(violation, dict):
                    quota_ids.append(str(violation.get("quotaId", "")))
    return retry_after, quota_ids
