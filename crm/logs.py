"""Logging: one format per process, the same context on every line, and no secrets in any of it.

``LOG_FORMAT=text`` (the default) is for a person at a terminal; ``LOG_FORMAT=json`` writes one
JSON object per line for a log collector. Either way every record carries the request id, the
workspace id, the process role (web, worker, gateway) and the task it ran in: a record factory
captures them when the record is made, in the thread that made it, so every handler (the
stream, gunicorn's, a test's caplog) sees the same context.

Secrets are kept out at the source (the access log masks webhook keys and invitation tokens in
paths and never logs query strings), and the formatters mask what slips through anyway: bearer
tokens, API keys, token query parameters, secret paths and SQL parameters in a library's message
or a traceback.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, has_app_context, request
from gunicorn.glogging import Logger as _GunicornLogger

access_log = logging.getLogger("crm.access")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REQUEST_ID_HEADER = "X-Request-ID"
# A request id from a proxy is kept if it is short and can't forge a log line or a header.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Libraries that log whole URLs (query strings and tokens included) or pairing codes at INFO;
# google-genai says "AFC is enabled" on every call. Their warnings still show.
_CHATTY = ("httpx", "httpcore", "httpx2", "httpcore2", "neonize", "google_genai")

_SECRET_PATHS = re.compile(r"^(/webhooks/cloud/|/invite/)[^/]+")
_MASKS = (
    (re.compile(r"(/webhooks/cloud/|/invite/)[^/\s?#'\"]+"), r"\1…"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"(?i)(x-goog-api-key['\"]?\s*[:=]\s*['\"]?)[^\s'\",}&]+"), r"\1***"),
    (
        re.compile(
            r"(?i)([?&;](?:access_token|hub\.verify_token|verify_token|key|api_key|token|"
            r"appsecret_proof|client_secret|secret|password)=)[^&\s'\"#]+"
        ),
        r"\1***",
    ),
    # SQLAlchemy puts a failed statement's values (message text, phones, keys) in its errors.
    (re.compile(r"\[parameters: [^\n]*\]"), "[parameters: hidden]"),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"), "***"),  # Google API keys
    (re.compile(r"\bEAA[A-Za-z0-9]{30,}"), "***"),  # Meta access tokens
)

_request_id: ContextVar[str | None] = ContextVar("crm_log_request_id", default=None)
_workspace_id: ContextVar[int | None] = ContextVar("crm_log_workspace_id", default=None)
_task: ContextVar[tuple[str, str | None] | None] = ContextVar("crm_log_task", default=None)
_role: dict[str, str] = {}


def masked_path(path: str) -> str:
    return _SECRET_PATHS.sub(lambda m: m.group(1) + "…", path)


def mask_secrets(text: str) -> str:
    """``text`` with anything that looks like a token, a key or a secret path masked."""
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


# --- context ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogContext:
    request_id: str | None
    workspace_id: int | None
    process: str
    task: str | None
    task_id: str | None


def set_process(role: str) -> None:
    """Name this process's role in its log lines: ``web``, ``worker`` or ``gateway``."""
    _role["role"] = role


def process_role() -> str:
    if "role" not in _role:
        _role["role"] = _role_from_argv(sys.argv)
    return _role["role"]


def _role_from_argv(argv: list[str]) -> str:
    """``flask [--app X] crm worker`` is a worker, ``… crm gateway`` the gateway; the rest web."""
    words = [arg for arg in argv[1:] if not arg.startswith("-")]
    for here, after in itertools.pairwise(words):
        if here == "crm":
            return after if after in ("worker", "gateway") else "web"
    return "web"


def current_context() -> LogContext:
    task = _task.get()
    return LogContext(
        request_id=_request_id.get(),
        workspace_id=_workspace_id.get() or _request_workspace(),
        process="worker" if task else process_role(),
        task=task[0] if task else None,
        task_id=task[1] if task else None,
    )


def _request_workspace() -> int | None:
    """The workspace the current request authenticated into (``g.workspace_id``), if any."""
    try:
        value = g.get("workspace_id") if has_app_context() else None
    except Exception:  # a record made while a context is being torn down: no workspace then
        return None
    return value if isinstance(value, int) else None


def bind_workspace(workspace_id: int) -> None:
    """Put ``workspace_id`` on the rest of this request's (or this task's) log lines, for code that
    learns the workspace without authenticating into it (a webhook finds it from its key)."""
    _workspace_id.set(workspace_id)


@contextmanager
def task_context(name: str, task_id: str | None = None, workspace_id: int | None = None) -> Iterator[None]:
    """Every line logged inside carries ``task`` (and ``task_id``) and says ``process: worker``;
    ``workspace_id`` when the task knows it (else the caller's, for a task run inline)."""
    task_token = _task.set((name, task_id))
    workspace_token = _workspace_id.set(workspace_id) if workspace_id is not None else None
    try:
        yield
    finally:
        if workspace_token is not None:
            _workspace_id.reset(workspace_token)
        _task.reset(task_token)


class _ContextRecordFactory:
    """Wraps the record factory so each record is stamped with the context it was made in."""

    def __init__(self, base: Any):
        self.base = base

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.base(*args, **kwargs)
        record.crm_context = current_context()
        return record


def _install_record_factory() -> None:
    base = logging.getLogRecordFactory()
    if not isinstance(base, _ContextRecordFactory):
        logging.setLogRecordFactory(_ContextRecordFactory(base))


# --- formatters ------------------------------------------------------------------------------


class MaskingFormatter(logging.Formatter):
    """A plain ``logging.Formatter`` whose output goes through ``mask_secrets``."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "crm_context",
    "taskName",
}
_SKIP = object()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, workspace_id, process,
    pid, then task/task_id, exception and the record's JSON-safe ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        context = getattr(record, "crm_context", None)
        if not isinstance(context, LogContext):
            context = current_context()
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
            "request_id": context.request_id,
            "workspace_id": context.workspace_id,
            "process": context.process,
            "pid": record.process,
        }
        if context.task:
            line["task"] = context.task
            line["task_id"] = context.task_id
        if record.exc_info:
            line["exception"] = mask_secrets(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = mask_secrets(record.exc_text)
        if record.stack_info:
            line["stack"] = mask_secrets(self.formatStack(record.stack_info))
        for key, value in record.__dict__.items():
            # An explicit extra workspace_id wins: a worker line may be about one workspace.
            if key in _RECORD_FIELDS or (key in line and key != "workspace_id"):
                continue
            safe = _json_safe(value)
            if safe is not _SKIP:
                line[key] = safe
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def _json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` if JSON can carry it as it is (strings masked), else ``_SKIP``."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _SKIP
    if isinstance(value, str):
        return mask_secrets(value)
    if depth >= 4:
        return _SKIP
    if isinstance(value, list | tuple):
        items = [_json_safe(item, depth + 1) for item in value]
        return _SKIP if any(item is _SKIP for item in items) else items
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        fields = {key: _json_safe(item, depth + 1) for key, item in value.items()}
        return _SKIP if any(item is _SKIP for item in fields.values()) else fields
    return _SKIP


def log_format() -> str:
    """``LOG_FORMAT``: ``text`` (default) or ``json``."""
    return os.environ.get("LOG_FORMAT", "text").strip().lower() or "text"


def make_formatter(fmt: str | None = None) -> logging.Formatter:
    return JsonFormatter() if (fmt or log_format()) == "json" else MaskingFormatter(TEXT_FORMAT)


class GunicornLogger(_GunicornLogger):
    """gunicorn's own lines (``Booting worker``, ``Error handling request /webhooks/cloud/…``)
    in the same format as the app's, masked the same way. ``logger_class`` in gunicorn.conf.py
    and in ``flask crm serve``."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        _install_record_factory()
        json_lines = log_format() == "json"
        for log, fmt, datefmt in (
            (self.error_log, self.error_fmt, self.datefmt),
            (self.access_log, self.access_fmt, None),
        ):
            for handler in log.handlers:
                if isinstance(handler, logging.StreamHandler):  # stderr or a file; syslog keeps its own
                    handler.setFormatter(JsonFormatter() if json_lines else MaskingFormatter(fmt, datefmt))


# --- the app ---------------------------------------------------------------------------------


def setup_logging(app: Flask) -> None:
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    fmt = log_format()
    _install_record_factory()
    root = logging.getLogger()
    if not root.handlers:  # a host that configured logging (gunicorn's logconfig, pytest) keeps it
        handler = logging.StreamHandler()
        handler.setFormatter(make_formatter("json" if fmt == "json" else "text"))
        root.addHandler(handler)
        root.setLevel(level)
    logging.getLogger("crm").setLevel(level)
    for chatty in _CHATTY:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    if fmt not in ("text", "json"):
        logging.getLogger(__name__).warning("LOG_FORMAT=%r is not text or json; using text", fmt)

    app.before_request(_bind_request)
    app.after_request(_log_request)
    app.teardown_request(_unbind_request)


def _bind_request() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    g.request_id = request_id
    g.request_started = time.monotonic()
    g.log_tokens = (_request_id.set(request_id), _workspace_id.set(None))


def _log_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    if not request.path.startswith("/static/"):
        elapsed = (time.monotonic() - g.get("request_started", time.monotonic())) * 1000
        path = masked_path(request.path)
        access_log.info(
            "%s %s %s %.1fms workspace=%s",
            request.method,
            path,
            response.status_code,
            elapsed,
            g.get("workspace_id", "-"),
            extra={
                "method": request.method,
                "path": path,
                "status": response.status_code,
                "duration_ms": round(elapsed, 1),
            },
        )
    return response


def _unbind_request(_exc: BaseException | None) -> None:
    tokens: tuple[Token[str | None], Token[int | None]] | None = g.pop("log_tokens", None)
    if tokens is None:
        return
    try:
        _workspace_id.reset(tokens[1])
        _request_id.reset(tokens[0])
    except ValueError:  # torn down in another context than the one it began in: nothing to undo
        pass
