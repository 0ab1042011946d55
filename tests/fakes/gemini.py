"""A Gemini Developer API emulator: a real HTTP server on 127.0.0.1 for tests and benchmarks.

    with GeminiStub() as gemini:                 # random free port, stopped (port closed) on exit
        client = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=gemini.url))
        gemini.script(Outcome.rate_limited("2s"), Outcome.answer("Hello!"))   # one per call
        gemini.set_default(Outcome.answer(lambda call: f"echo: {call.last_user_text}"))
        ...                                      # code under test calls the emulator over HTTP
        assert gemini.calls[0].system_instruction == "Be brief."
        assert gemini.max_calls_in_window(60) <= 15

Endpoint: ``POST /<version>/models/<model>:generateContent`` for any version (google-genai 3.x
sends ``v1`` unless ``api_version`` or ``GOOGLE_GENAI_API_VERSION=beta`` says ``v1beta``). The
key is read from ``x-goog-api-key`` (or ``?key=``). Every such request lands in ``calls`` with
what it was answered; anything else gets a Google-style 404 and lands in ``other_requests``.

Which answer a call gets, in order:
1. no key → 403 PERMISSION_DENIED; a key outside ``api_keys`` (default: any key) → 400
   INVALID_ARGUMENT ``API_KEY_INVALID``; body not JSON or without ``contents`` → 400; a model
   outside ``models`` (default: any model) → 404 NOT_FOUND. These never consume the script.
2. the next scripted outcome (``script``/``enqueue``), if any;
3. rate limit mode (``rate_limit=``/``set_rate_limit``): when ``rate_limit`` answers were already
   served in the last ``rate_window`` seconds, the per-minute 429, ``retryDelay`` = when the
   oldest of them leaves the window (whole seconds, truncated as Google does, unless
   ``retry_delay_decimals``);
4. random 429s (``random_429=`` fraction, seeded RNG), for benchmarks;
5. the default outcome (``set_default``; initially ``Outcome.answer()``: "OK", or in JSON mode
   an object built from the request's response schema).

Answers served (HTTP 200), whatever decided them, count in the rate limit window.

Standalone: ``python -m tests.fakes.gemini --port 0 [--rate-limit 15] [--random-429 0.3]``
prints its URL and serves until interrupted (then prints its counters).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import re
import secrets
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from werkzeug.wrappers import Request, Response

from tests.fakes.local_server import LocalServer

__all__ = [
    "DEFAULT_API_KEY",
    "GeminiCall",
    "GeminiStub",
    "OtherRequest",
    "Outcome",
    "format_duration",
    "parse_duration",
    "sample_from_schema",
]

DEFAULT_API_KEY = "test-key"
DEFAULT_TEXT = "OK"

QUOTA_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
PER_MINUTE_QUOTA_ID = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
PER_DAY_QUOTA_ID = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
RATE_LIMITS_URL = "https://ai.google.dev/gemini-api/docs/rate-limits"
INTERNAL_MESSAGE = (
    "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting"
)
UNAVAILABLE_MESSAGE = "The model is overloaded. Please try again later."
INVALID_KEY_MESSAGE = "API key not valid. Please pass a valid API key."
NO_KEY_MESSAGE = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
_PACIFIC = ZoneInfo("America/Los_Angeles")  # the free tier's daily quotas reset at midnight there
_DURATION = re.compile(r"^\d+(\.\d+)?s$")
_PATH = re.compile(
    r"^/(?P<version>v\d+(?:alpha|beta)?\d*)/(?P<model>(?:models|tunedModels)/[^/:]+):(?P<method>\w+)$"
)

TextSource = str | Callable[["GeminiCall"], str]
_Reply = tuple[int, dict[str, Any]]


def format_duration(seconds: float, decimals: int = 0) -> str:
    """A ``google.protobuf.Duration`` as JSON: ``"2s"``; with ``decimals``, ``"0.500s"``.
    With no decimals the seconds are truncated, as Gemini does in ``RetryInfo.retryDelay``."""
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if decimals <= 0:
        return f"{int(seconds)}s"
    return f"{seconds:.{decimals}f}s"


def parse_duration(value: str) -> float:
    """``"2s"`` / ``"1.5s"`` → seconds."""
    if not _DURATION.match(value):
        raise ValueError(f"not a protobuf Duration: {value!r}")
    return float(value[:-1])


def _duration(value: str | float) -> str:
    if isinstance(value, str):
        parse_duration(value)  # validates
        return value
    return format_duration(value, 0 if float(value).is_integer() else 3)


def _seconds_to_pacific_midnight(now: float | None = None) -> int:
    local = datetime.fromtimestamp(time.time() if now is None else now, _PACIFIC)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    # Aware datetimes of one tzinfo subtract as wall clocks: compare in UTC for DST days.
    return max(1, math.ceil((midnight.astimezone(UTC) - local.astimezone(UTC)).total_seconds()))


def sample_from_schema(schema: Any, text: str = DEFAULT_TEXT) -> Any:
    """A value that satisfies a Gemini response schema (OpenAPI style, ``"type": "OBJECT"``) or a
    JSON Schema (``responseJsonSchema``): strings are ``text``, booleans false, numbers 0, enums
    their first value, arrays one item. Good enough for replies parsed as JSON in tests."""
    if not isinstance(schema, Mapping):
        return text
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return sample_from_schema(schema[key][0], text)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "string")
    kind = str(kind or ("object" if "properties" in schema else "string")).lower()
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: sample_from_schema(sub, text) for name, sub in properties.items()}
    if kind == "array":
        return [sample_from_schema(schema.get("items"), text)]
    if kind == "boolean":
        return False
    if kind in ("integer", "number"):
        return 0
    if kind == "null":
        return None
    return text


def _reply_text(call: GeminiCall) -> str:
    """The default answer: ``DEFAULT_TEXT``, or in JSON mode an object fitting the schema."""
    if call.wants_json:
        return json.dumps(sample_from_schema(call.response_schema))
    return DEFAULT_TEXT


@dataclass(frozen=True)
class Outcome:
    """What one call is answered with; build it with the class methods."""

    kind: str  # answer | rate_limited | daily_quota | internal | unavailable | invalid_key | hang | error
    text: TextSource | None = None  # answer: fixed text or f(call) -> text
    finish_reason: str = "STOP"
    retry_delay: str | None = None  # 429s: RetryInfo.retryDelay (None: no RetryInfo)
    quota_value: str | None = None
    seconds: float | None = None  # hang: how long (None: until the server stops)
    then: Outcome | None = None  # hang: what to answer afterwards (None: the default outcome)
    status: int = 200
    body: Mapping[str, Any] | None = None  # error: the JSON served as is

    @classmethod
    def answer(cls, text: TextSource = _reply_text, *, finish_reason: str = "STOP") -> Outcome:
        """A normal answer whose text is ``text`` or ``text(call)``."""
        return cls("answer", text=text, finish_reason=finish_reason)

    @classmethod
    def json_answer(cls, value: Any | Callable[[GeminiCall], Any]) -> Outcome:
        """An answer whose text is ``json.dumps(value)`` (or of ``value(call)``): what the model
        returns when asked for ``response_mime_type="application/json"``."""
        if callable(value):
            fn: Callable[[GeminiCall], Any] = value
            return cls.answer(lambda call: json.dumps(fn(call)))
        text = json.dumps(value)
        return cls.answer(text)

    @classmethod
    def rate_limited(cls, retry_delay: str | float | None = "2s", *, quota_value: str = "15") -> Outcome:
        """429 RESOURCE_EXHAUSTED, requests per minute (``retry_delay``: ``"2s"``, ``1.5``...)."""
        delay = None if retry_delay is None else _duration(retry_delay)
        return cls("rate_limited", retry_delay=delay, quota_value=quota_value, status=429)

    @classmethod
    def daily_quota(cls, retry_delay: str | float | None = -1, *, quota_value: str = "250") -> Outcome:
        """429 RESOURCE_EXHAUSTED, requests per day. The default RetryInfo says until midnight
        Pacific time (when the free tier resets, so many hours); ``None`` leaves it out."""
        if retry_delay == -1:
            retry_delay = _seconds_to_pacific_midnight()
        delay = None if retry_delay is None else _duration(retry_delay)
        return cls("daily_quota", retry_delay=delay, quota_value=quota_value, status=429)

    @classmethod
    def internal(cls) -> Outcome:
        """500 INTERNAL."""
        return cls("internal", status=500)

    @classmethod
    def unavailable(cls) -> Outcome:
        """503 UNAVAILABLE, "The model is overloaded"."""
        return cls("unavailable", status=503)

    @classmethod
    def invalid_key(cls) -> Outcome:
        """400 INVALID_ARGUMENT ``API_KEY_INVALID`` whatever the key."""
        return cls("invalid_key", status=400)

    @classmethod
    def hang(cls, seconds: float | None = None, then: Outcome | None = None) -> Outcome:
        """Hold the request ``seconds`` (None: until ``stop()``), then answer ``then`` (None: the
        default outcome). ``stop()`` cuts every hold short."""
        if seconds is not None and seconds < 0:
            raise ValueError("seconds must be >= 0")
        if then is not None and then.kind == "hang":
            raise ValueError("a hang cannot be followed by another hang")
        return cls("hang", seconds=seconds, then=then)

    @classmethod
    def error(cls, status: int, body: Mapping[str, Any]) -> Outcome:
        """Any other HTTP error, its JSON body served as given."""
        return cls("error", status=status, body=body)


@dataclass
class GeminiCall:
    """One ``generateContent`` request as received, and what it was answered."""

    model: str  # "gemini-2.5-flash" (without "models/")
    api_version: str  # "v1", "v1beta"...
    method: str  # "generateContent"
    api_key: str | None
    headers: dict[str, str]
    body: Any  # the parsed JSON (None if it was not JSON)
    received_at: float = field(default_factory=time.monotonic)  # time.monotonic() on arrival
    received_wall: float = field(default_factory=time.time)  # time.time() on arrival
    # Outcome.kind served, or what the checks rejected: no_key | invalid_key | bad_request | unknown_model
    outcome: str = ""
    source: str = ""  # what decided it: check | script | rate_limit | random | default
    status: int = 0  # HTTP status answered (0: not yet, e.g. held; 503 when stop() cut a hang)
    response: dict[str, Any] | None = None  # the JSON answered
    answered_at: float | None = None  # time.monotonic() when answered

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    @property
    def json(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}

    @property
    def contents(self) -> list[dict[str, Any]]:
        contents = self.json.get("contents")
        return contents if isinstance(contents, list) else []

    @property
    def system_instruction(self) -> str | None:
        """The system instruction's text parts, joined by newlines (None when not sent)."""
        instruction = self.json.get("systemInstruction") or self.json.get("system_instruction")
        if instruction is None:
            return None
        if isinstance(instruction, str):
            return instruction
        return "\n".join(_texts(instruction))

    @property
    def generation_config(self) -> dict[str, Any]:
        config = self.json.get("generationConfig")
        return config if isinstance(config, dict) else {}

    @property
    def response_mime_type(self) -> str | None:
        return self.generation_config.get("responseMimeType")

    @property
    def response_schema(self) -> Any | None:
        """``responseSchema`` (OpenAPI style) or ``responseJsonSchema`` (JSON Schema)."""
        config = self.generation_config
        return config.get("responseSchema", config.get("responseJsonSchema"))

    @property
    def wants_json(self) -> bool:
        return self.response_mime_type == "application/json"

    @property
    def texts(self) -> list[tuple[str, str]]:
        """``(role, text)`` of every text part of ``contents``, in order."""
        return [(str(c.get("role", "user")), t) for c in self.contents for t in _texts(c)]

    @property
    def last_user_text(self) -> str:
        """The text of the last ``user`` content (its text parts joined by newlines)."""
        for content in reversed(self.contents):
            if content.get("role", "user") == "user":
                return "\n".join(_texts(content))
        return ""


@dataclass(frozen=True)
class OtherRequest:
    """A request that was not a ``generateContent`` call (answered 404)."""

    method: str
    path: str
    status: int
    received_at: float = field(default_factory=time.monotonic)


def _texts(content: Any) -> list[str]:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return []
    return [str(p["text"]) for p in parts if isinstance(p, dict) and "text" in p]


def _error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> _Reply:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return code, {"error": error}


class GeminiStub(LocalServer):
    """The Gemini Developer API's ``generateContent``, with scripted outcomes and quotas."""

    def __init__(
        self,
        *,
        api_keys: Collection[str] | None = None,
        models: Collection[str] | None = None,
        default: Outcome | None = None,
        rate_limit: int | None = None,
        rate_window: float = 60.0,
        retry_delay_decimals: int = 0,
        random_429: float = 0.0,
        seed: int | None = 0,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """``api_keys``: the keys accepted (None: any non-empty key). ``models``: the models that
        exist, without ``models/`` (None: any). ``rate_limit``/``rate_window``: answers allowed per
        rolling window before the per-minute 429. ``random_429``: fraction of calls answered 429
        (RNG seeded with ``seed``). ``latency``: seconds added to every answer."""
        self.api_keys = None if api_keys is None else set(api_keys)
        self.models = None if models is None else {m.removeprefix("models/") for m in models}
        self.host = host
        self.retry_delay_decimals = retry_delay_decimals
        self.calls: list[GeminiCall] = []
        self.other_requests: list[OtherRequest] = []
        self.counts: Counter[str] = Counter()  # outcome kind -> calls
        self._initial = (default, rate_limit, rate_window, random_429, seed, latency)
        self._script: deque[Outcome] = deque()
        self._served: deque[float] = deque()  # time.monotonic() of answers served, for rate_limit
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._requested_port = port
        self._apply_initial()

    def _apply_initial(self) -> None:
        default, rate_limit, rate_window, random_429, seed, latency = self._initial
        self.set_default(default or Outcome.answer())
        self.set_rate_limit(rate_limit, window=rate_window)
        self.set_random_429(random_429, seed=seed)
        self.set_latency(latency)

    # -- lifecycle ---------------------------------------------------------------------
    thread_name = "gemini-stub"
    poll_interval = 0.01

    def _before_start(self) -> None:
        self._stopping.clear()

    def _before_stop(self) -> None:
        self._stopping.set()  # held (hanging) requests are released

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the SDK's ``HttpOptions(base_url=...)``."""
        return f"http://{self.host}:{self.port}"

    base_url = url

    # -- test controls -----------------------------------------------------------------
    def script(self, *outcomes: Outcome) -> None:
        """Queue outcomes for the next calls, one consumed per call (after the key check)."""
        with self._lock:
            self._script.extend(outcomes)

    def enqueue(self, outcome: Outcome, times: int = 1) -> None:
        """Queue ``outcome`` for the next ``times`` calls."""
        if times < 1:
            raise ValueError("times must be >= 1")
        self.script(*([outcome] * times))

    @property
    def pending(self) -> int:
        """Scripted outcomes not consumed yet."""
        with self._lock:
            return len(self._script)

    def set_default(self, outcome: Outcome | TextSource) -> None:
        """What calls get when nothing is scripted; a text or callable means ``Outcome.answer``."""
        self._default = outcome if isinstance(outcome, Outcome) else Outcome.answer(outcome)

    def set_rate_limit(self, per_window: int | None, *, window: float = 60.0) -> None:
        """Serve at most ``per_window`` answers in any rolling ``window`` seconds, the per-minute
        429 beyond (None: no limit)."""
        if per_window is not None and per_window < 1:
            raise ValueError("rate limit must be >= 1 (or None for no limit)")
        if window <= 0:
            raise ValueError("window must be > 0")
        with self._lock:
            self.rate_limit, self.rate_window = per_window, window

    def set_random_429(self, fraction: float, *, seed: int | None = 0, retry_delay: str = "2s") -> None:
        """Answer this fraction of the unscripted calls with the per-minute 429 (benchmarks)."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be within [0, 1]")
        with self._lock:
            self.random_429, self._random_delay = fraction, _duration(retry_delay)
            self._rng = random.Random(seed)

    def set_latency(self, seconds: float) -> None:
        """Delay every answer by ``seconds`` (0 turns it off); ``stop()`` cuts it short."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self.latency = seconds

    def reset(self) -> None:
        """Forget calls, counters, the script and the rate window; settings go back to the
        constructor's."""
        with self._lock:
            self.calls.clear()
            self.other_requests.clear()
            self.counts.clear()
            self._script.clear()
            self._served.clear()
        self._apply_initial()

    # -- inspection --------------------------------------------------------------------
    @property
    def call_count(self) -> int:
        with self._lock:
            return len(self.calls)

    def calls_with(self, outcome: str) -> list[GeminiCall]:
        with self._lock:
            return [c for c in self.calls if c.outcome == outcome]

    def max_calls_in_window(self, seconds: float = 60.0, *, outcomes: Collection[str] | None = None) -> int:
        """The most calls received within any rolling ``seconds`` (arrivals less than ``seconds``
        apart), counting only ``outcomes`` when given (e.g. ``{"answer"}``)."""
        with self._lock:
            times = sorted(c.received_at for c in self.calls if outcomes is None or c.outcome in outcomes)
        best = start = 0
        for end, at in enumerate(times):
            while at - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best

    def assert_max_calls_in_window(self, limit: int, seconds: float = 60.0) -> None:
        """Fail when more than ``limit`` calls arrived within some rolling ``seconds``."""
        most = self.max_calls_in_window(seconds)
        assert most <= limit, f"{most} calls within {seconds:g}s (limit {limit})"

    def wait_for_calls(self, count: int, timeout: float = 5.0) -> list[GeminiCall]:
        """Block until ``count`` calls were received (raises TimeoutError after ``timeout``)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.calls) >= count, timeout):
                raise TimeoutError(f"{len(self.calls)} calls after {timeout}s, expected {count}")
            return list(self.calls)

    # -- HTTP server -------------------------------------------------------------------
    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        match = _PATH.match(request.path)
        if match is None or request.method != "POST" or match["method"] != "generateContent":
            status, body = _error(404, "NOT_FOUND", "Method not found.")
            with self._lock:
                self.other_requests.append(OtherRequest(request.method, request.path, status))
            return self._response(status, body)(environ, start_response)
        raw = request.get_data()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        key = request.headers.get("x-goog-api-key") or request.args.get("key")
        call = GeminiCall(
            match["model"].removeprefix("models/"),
            match["version"],
            match["method"],
            key,
            dict(request.headers),
            parsed,
        )
        with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        status, body = self._answer(call, raw)
        if self.latency and status == 200:
            self._stopping.wait(self.latency)
        with self._lock:
            call.status, call.response, call.answered_at = status, body, time.monotonic()
        return self._response(status, body)(environ, start_response)

    def _answer(self, call: GeminiCall, raw: bytes) -> _Reply:
        rejected = self._check(call, raw)
        if rejected is not None:
            kind, reply = rejected
            self._decided(call, kind, "check")
            return reply
        with self._lock:
            outcome, source = self._pick(call)
        self._decided(call, outcome.kind, source)
        if outcome.kind == "hang":
            self._stopping.wait(outcome.seconds)
            if self._stopping.is_set():
                return _error(503, "UNAVAILABLE", "The service is currently unavailable.")
            outcome = outcome.then or self._default
            if outcome.kind == "hang":  # a default that hangs: answer after the first hold
                outcome = Outcome.answer()
            if outcome.kind == "answer":
                with self._lock:
                    self._served.append(time.monotonic())
        return self._render(outcome, call)

    def _decided(self, call: GeminiCall, kind: str, source: str) -> None:
        with self._lock:
            call.outcome, call.source = kind, source
            self.counts[kind] += 1

    def _check(self, call: GeminiCall, raw: bytes) -> tuple[str, _Reply] | None:
        """The checks Google makes before any quota (key, body, model): the outcome kind
        (``no_key``, ``invalid_key``, ``bad_request``, ``unknown_model``) and the answer."""
        if not call.api_key:
            return "no_key", _error(403, "PERMISSION_DENIED", NO_KEY_MESSAGE)
        if self.api_keys is not None and call.api_key not in self.api_keys:
            return "invalid_key", self._render(Outcome.invalid_key(), call)
        if not isinstance(call.body, dict):
            at = raw[:10].decode(errors="replace") or "EOF"
            message = f"Invalid JSON payload received. Unexpected token.\n{at}\n^"
            return "bad_request", _error(400, "INVALID_ARGUMENT", message)
        if not call.contents:
            message = "* GenerateContentRequest.contents: contents is not specified\n"
            return "bad_request", _error(400, "INVALID_ARGUMENT", message)
        if self.models is not None and call.model not in self.models:
            message = (
                f"models/{call.model} is not found for API version {call.api_version}, or is not "
                "supported for generateContent. Call ListModels to see the list of available models "
                "and their supported methods."
            )
            return "unknown_model", _error(404, "NOT_FOUND", message)
        return None

    def _pick(self, call: GeminiCall) -> tuple[Outcome, str]:
        """The outcome for an accepted call (caller holds the lock); a 200 answer is counted in
        the rate window now, on arrival, so concurrent calls see each other."""
        now = time.monotonic()
        window = self._served
        while window and window[0] <= now - self.rate_window:
            window.popleft()
        if self._script:
            outcome, source = self._script.popleft(), "script"
        elif self.rate_limit is not None and len(window) >= self.rate_limit:
            free_in = window[0] + self.rate_window - now
            delay = format_duration(max(free_in, 0.0), self.retry_delay_decimals)
            return Outcome.rate_limited(delay, quota_value=str(self.rate_limit)), "rate_limit"
        elif self.random_429 and self._rng.random() < self.random_429:
            return Outcome.rate_limited(self._random_delay), "random"
        else:
            outcome, source = self._default, "default"
        if outcome.kind == "answer":
            window.append(now)
        return outcome, source

    def _render(self, outcome: Outcome, call: GeminiCall) -> _Reply:
        kind = outcome.kind
        if kind == "answer":
            return 200, self._completion(outcome, call)
        if kind in ("rate_limited", "daily_quota"):
            return self._quota_error(outcome, call.model)
        if kind == "internal":
            return _error(500, "INTERNAL", INTERNAL_MESSAGE)
        if kind == "unavailable":
            return _error(503, "UNAVAILABLE", UNAVAILABLE_MESSAGE)
        if kind == "invalid_key":
            return _error(400, "INVALID_ARGUMENT", INVALID_KEY_MESSAGE, [_error_info("API_KEY_INVALID")])
        if kind == "error":
            return outcome.status, dict(outcome.body or {})
        raise ValueError(f"cannot render outcome {kind!r}")

    @staticmethod
    def _completion(outcome: Outcome, call: GeminiCall) -> dict[str, Any]:
        source = outcome.text if outcome.text is not None else _reply_text
        text = source(call) if callable(source) else source
        prompt_tokens = _tokens(" ".join(t for _, t in call.texts) + (call.system_instruction or ""))
        reply_tokens = _tokens(text)
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": outcome.finish_reason,
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": reply_tokens,
                "totalTokenCount": prompt_tokens + reply_tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
            },
            "modelVersion": call.model,
            "responseId": secrets.token_urlsafe(17)[:23],
        }

    @staticmethod
    def _quota_error(outcome: Outcome, model: str) -> _Reply:
        daily = outcome.kind == "daily_quota"
        quota_value = outcome.quota_value or ("250" if daily else "15")
        message = (
            "You exceeded your current quota, please check your plan and billing details. For more "
            f"information on this error, head to: {RATE_LIMITS_URL}. To monitor your current usage, "
            "head to: https://ai.dev/usage?tab=rate-limit. \n"
            f"* Quota exceeded for metric: {QUOTA_METRIC}, limit: {quota_value}, model: {model}"
        )
        if outcome.retry_delay is not None:
            message += f"\nPlease retry in {outcome.retry_delay}."
        details: list[dict[str, Any]] = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": QUOTA_METRIC,
                        "quotaId": PER_DAY_QUOTA_ID if daily else PER_MINUTE_QUOTA_ID,
                        "quotaDimensions": {"location": "global", "model": model},
                        "quotaValue": quota_value,
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{"description": "Learn more about Gemini API quotas", "url": RATE_LIMITS_URL}],
            },
        ]
        if outcome.retry_delay is not None:
            details.append(
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": outcome.retry_delay}
            )
        return _error(429, "RESOURCE_EXHAUSTED", message, details)

    @staticmethod
    def _response(status: int, body: dict[str, Any]) -> Response:
        headers = {"Content-Type": "application/json; charset=UTF-8", "Vary": "Origin, X-Origin, Referer"}
        return Response(json.dumps(body, indent=2), status=status, headers=headers)


def _error_info(reason: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }


def _tokens(text: str) -> int:
    """Roughly Gemini's count: about four characters a token, at least one."""
    return max(1, math.ceil(len(text) / 4))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.gemini", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--rate-limit", type=int, default=None, help="answers per rolling window")
    parser.add_argument("--rate-window", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--random-429", type=float, default=0.0, help="fraction of calls answered 429")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--api-key", action="append", help="accepted key (repeatable; default: any)")
    args = parser.parse_args(argv)
    stub = GeminiStub(
        api_keys=args.api_key,
        rate_limit=args.rate_limit,
        rate_window=args.rate_window,
        random_429=args.random_429,
        seed=args.seed,
        latency=args.latency,
        host=args.host,
        port=args.port,
    )
    # Ctrl-C or a plain kill stops it and prints the counts, even when the shell that started it in
    # the background left Ctrl-C ignored (as non-interactive shells do for background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with stub:
        print(stub.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
        print(json.dumps({"calls": stub.call_count, "by_outcome": dict(stub.counts)}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
