"""A WhatsApp Cloud API (Graph API) emulator: a real HTTP server on 127.0.0.1 for tests.

    with GraphEmulator() as graph:            # random free port, stopped (port closed) on exit
        app.config["GRAPH_API_URL"] = graph.base_url    # http://127.0.0.1:PORT/v23.0
        graph.fail_next(130429)               # the next accepted-looking send gets Meta's error
        graph.set_throughput(80)              # or GraphEmulator(throughput=80): Meta's per-number cap
        ...                                   # code under test calls the emulator over HTTP
        assert graph.sent[0].json["text"]["body"] == "hi"
        graph.post_statuses(webhook_url, graph.sent[0].wamid, ["read", "delivered"], duplicate=True)

Endpoints (Meta's documented contract; every request, good or bad, lands in ``requests``):
- ``POST /<v>/<phone_number_id>/messages``: bearer token (else 401, code 190), known phone
  number id (else 400, code 100), body validated like Meta's (``type`` defaults to ``text``);
  200 ``{"messaging_product", "contacts": [{"input", "wa_id"}], "messages": [{"id"}]}``.
  ``{"status": "read", "message_id"}`` (mark as read) answers ``{"success": true}``, is not
  a send and never consumes a queued failure. Queued failures (``fail_next``) apply to the
  next sends whose body is valid.
- Throughput (``throughput=`` or ``set_throughput``; default: no limit): a valid send arriving
  when ``throughput`` sends of the same phone number id were already accepted in the last second
  (a sliding window on ``time.monotonic()``) is answered with Meta's 130429 "Rate limit hit"
  and lands in ``refused``, not in ``sent``.
- ``POST /<v>/<phone_number_id>/media`` (multipart: ``messaging_product``, ``file``, ``type``)
  → ``{"id"}``; ``GET /<v>/<media_id>`` → metadata with a download ``url``; ``GET`` that url
  with the bearer token → the bytes; ``DELETE /<v>/<media_id>`` → ``{"success": true}``.
  Unknown media id → 404 code 100. ``GET /<v>/<phone_number_id>`` → the number's profile.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes import graph_api_payloads as payloads
from tests.fakes.graph_api_payloads import WebhookSide, combine
from tests.fakes.local_server import LocalServer

__all__ = ["GraphEmulator", "RecordedRequest", "RefusedSend", "SentMessage", "UploadedMedia", "combine"]

DEFAULT_ACCESS_TOKEN = "test-token"
DEFAULT_APP_SECRET = "test-app-secret"
_Reply = tuple[int, dict[str, str], bytes]
_WWW_AUTHENTICATE = 'OAuth "Facebook Platform" "invalid_token" "Invalid OAuth access token"'


@dataclass
class RecordedRequest:
    """One request as the emulator received it; ``status`` is what it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any | None
    status: int = 0
    received_at: float = field(default_factory=time.monotonic)  # time.monotonic() on arrival

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


@dataclass(frozen=True)
class SentMessage:
    """A send Meta accepted: the JSON body posted and the wamid issued for it."""

    phone_number_id: str
    json: dict[str, Any]
    wamid: str
    accepted_at: float = field(default_factory=time.monotonic)  # for pacing checks

    @property
    def to(self) -> str:
        return str(self.json["to"])

    @property
    def type(self) -> str:
        return str(self.json.get("type", "text"))

    @property
    def text(self) -> str | None:
        return self.json.get("text", {}).get("body") if self.type == "text" else None


@dataclass(frozen=True)
class RefusedSend:
    """A valid send refused because the number's throughput was reached (130429)."""

    phone_number_id: str
    json: dict[str, Any]
    code: int
    refused_at: float  # time.monotonic() on arrival

    @property
    def to(self) -> str:
        return str(self.json["to"])


@dataclass
class UploadedMedia:
    data: bytes
    mime_type: str
    filename: str | None = None
    download_token: str = field(default="", repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def file_size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class _Failure:
    code: int
    http_status: int | None
    title: str | None
    details: str | None
    error_subcode: int | None


class GraphEmulator(WebhookSide, LocalServer):
    """Meta's Graph API for one business phone number (add more with ``add_phone_number``)."""

    def __init__(
        self,
        *,
        access_token: str = DEFAULT_ACCESS_TOKEN,
        app_secret: str = DEFAULT_APP_SECRET,
        phone_number_id: str = "1234567890",
        api_version: str = "v23.0",
        display_phone_number: str = "15550001234",
        waba_id: str = "102290129340398",
        throughput: int | None = None,
    ) -> None:
        self.access_token = access_token
        self.app_secret = app_secret
        self.phone_number_id = phone_number_id
        self.api_version = api_version
        self.display_phone_number = display_phone_number
        self.waba_id = waba_id
        self.phone_numbers: dict[str, str] = {phone_number_id: display_phone_number}
        self.requests: list[RecordedRequest] = []
        self.sent: list[SentMessage] = []
        self.refused: list[RefusedSend] = []
        self.uploads: dict[str, UploadedMedia] = {}
        # The WABA's message templates; while empty, template sends are not checked against them.
        self.templates: list[dict[str, Any]] = []
        self._failures: deque[_Failure] = deque()
        self._latency = 0.0
        self._throughput: int | None = None
        self._accepted: dict[str, deque[float]] = {}  # arrival times of accepted sends, per number
        self._lock = threading.Lock()
        self.set_throughput(throughput)
        self._initial_throughput = throughput

    # -- lifecycle ---------------------------------------------------------------------
    thread_name = "graph-emulator"

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` (the media download urls live here)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What the app uses as ``graph_url``: ``http://127.0.0.1:PORT/<api_version>``."""
        return f"{self.origin}/{self.api_version}"

    # -- test controls -----------------------------------------------------------------
    def fail_next(
        self,
        code: int,
        *,
        times: int = 1,
        http_status: int | None = None,
        title: str | None = None,
        details: str | None = None,
        error_subcode: int | None = None,
    ) -> None:
        """Queue Meta's error ``code`` for the next ``times`` sends (one consumed per send).
        HTTP status, title and details default to Meta's for that code."""
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._failures.extend([_Failure(code, http_status, title, details, error_subcode)] * times)

    @property
    def pending_failures(self) -> int:
        return len(self._failures)

    def set_latency(self, seconds: float) -> None:
        """Delay every answer by ``seconds`` (0 turns it off)."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._latency = seconds

    def set_throughput(self, per_second: int | None) -> None:
        """Accept at most ``per_second`` sends per phone number id in any sliding 1 s window
        (Meta's throughput; 80 by default on a real number); more get 130429. None: no limit."""
        if per_second is not None and per_second < 1:
            raise ValueError("throughput must be >= 1 (or None for no limit)")
        with self._lock:
            self._throughput = per_second

    @property
    def throughput(self) -> int | None:
        return self._throughput

    def add_phone_number(self, phone_number_id: str, display_phone_number: str = "15550009999") -> None:
        """Make another business number (phone number id) valid on this emulator."""
        self.phone_numbers[phone_number_id] = display_phone_number

    def add_media(self, data: bytes, mime_type: str, filename: str | None = None) -> str:
        """Pre-seed downloadable media (as if a customer had sent it); returns its media id."""
        media_id = payloads.new_media_id()
        with self._lock:
            self.uploads[media_id] = UploadedMedia(data, mime_type, filename, payloads.fbtrace_id())
        return media_id

    def add_template(self, name: str, body: str, **kwargs: Any) -> dict[str, Any]:
        """A message template of the WABA (see ``payloads.template``); returns it as listed."""
        template = payloads.template(name, body, **kwargs)
        with self._lock:
            self.templates.append(template)
        return template

    def reset(self) -> None:
        """Forget requests, sends, refusals, uploads, templates, queued failures and latency; the
        throughput limit goes back to the one given to the constructor."""
        with self._lock:
            self.requests.clear()
            self.sent.clear()
            self.refused.clear()
            self._accepted.clear()
            self._throughput = self._initial_throughput
            self.uploads.clear()
            self.templates.clear()
            self._failures.clear()
            self._latency = 0.0

    # -- HTTP server -------------------------------------------------------------------
    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            return self._handle(request, environ, start_response)
        finally:
            request.close()  # closes spooled multipart uploads

    def _handle(self, request: Request, environ: dict[str, Any], start_response: Any) -> Any:
        body = request.get_data(cache=True)
        parsed: Any | None = None
        if request.mimetype == "application/json":
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
        record = RecordedRequest(
            request.method, request.path, dict(request.args), dict(request.headers), body, parsed
        )
        status, headers, content = self._dispatch(request, record)
        record.status = status
        with self._lock:
            self.requests.append(record)
        if self._latency:
            time.sleep(self._latency)
        return Response(content, status=status, headers=headers)(environ, start_response)

    def _dispatch(self, request: Request, record: RecordedRequest) -> _Reply:
        parts = [p for p in request.path.split("/") if p]
        method = request.method
        if len(parts) == 2 and parts[0] == "media-download" and method == "GET":
            return self._download(request, parts[1])
        if not parts or parts[0] != self.api_version:
            return self._unsupported(method, parts[-1] if parts else "")
        if not self._authorized(request):
            return self._reply(
                *payloads.graph_error(
                    190,
                    message="Error validating access token: the access token is missing or invalid.",
                    with_error_data=False,
                )
            )
        if len(parts) == 3 and method == "POST" and parts[2] in ("messages", "media"):
            if parts[1] not in self.phone_numbers:
                return self._unsupported(method, parts[1])
            if parts[2] == "messages":
                return self._send(parts[1], request, record.json)
            return self._upload(request)
        if len(parts) == 3 and method == "GET" and parts[2] == "message_templates":
            if parts[1] != self.waba_id:
                return self._unsupported(method, parts[1])
            return self._list_templates(request)
        if len(parts) == 2 and method in ("GET", "DELETE"):
            return self._object(method, parts[1])
        return self._unsupported(method, parts[-1])

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else request.args.get("access_token", "")
        return token == self.access_token

    def _send(self, phone_number_id: str, request: Request, body: Any) -> _Reply:
        if request.mimetype == "application/json" and body is None and request.get_data():
            return self._invalid(100, "Request body is not valid JSON.")
        error = payloads.send_problem(body if isinstance(body, dict) else {})
        if error is not None:
            return self._invalid(*error)
        if body.get("status") == "read":
            return self._reply(200, {"success": True})
        media = body.get(str(body.get("type")))
        if isinstance(media, dict) and media.get("id") and str(media["id"]) not in self.uploads:
            return self._invalid(131053, f"Media upload error: media id {media['id']} is not valid")
        if body.get("type") == "template" and self.templates:
            problem = payloads.template_problem(self.templates, body["template"])
            if problem is not None:
                return self._invalid(*problem)
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            return self._reply(
                *payloads.graph_error(
                    failure.code,
                    http_status=failure.http_status,
                    title=failure.title,
                    details=failure.details,
                    error_subcode=failure.error_subcode,
                )
            )
        to = str(body["to"])
        wa_id = "".join(ch for ch in to if ch.isdigit())
        wamid = payloads.new_wamid(wa_id)
        with self._lock:
            # Arrival is read under the lock, so the window sees sends in the order it counts them.
            now = time.monotonic()
            accepted = self._take_slot(phone_number_id, now)
            if accepted:
                self.sent.append(SentMessage(phone_number_id, body, wamid, now))
            else:
                self.refused.append(RefusedSend(phone_number_id, body, 130429, now))
        if not accepted:
            return self._reply(*payloads.graph_error(130429))  # Meta's "Rate limit hit", HTTP 400
        contacts = [{"input": to, "wa_id": wa_id}]
        return self._reply(
            200, {"messaging_product": "whatsapp", "contacts": contacts, "messages": [{"id": wamid}]}
        )

    def _take_slot(self, phone_number_id: str, now: float) -> bool:
        """The throughput check (caller holds the lock): count this send in the number's sliding
        1 s window, or say no when ``throughput`` sends were already accepted in it."""
        if self._throughput is None:
            return True
        window = self._accepted.setdefault(phone_number_id, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= self._throughput:
            return False
        window.append(now)
        return True

    def _list_templates(self, request: Request) -> _Reply:
        """Cursor paging as the Graph API does it: ``limit`` (default 25) and ``after``."""
        try:
            limit = max(1, min(int(request.args.get("limit", "25")), 100))
            start = (
                int(base64.urlsafe_b64decode(request.args["after"]).decode())
                if "after" in request.args
                else 0
            )
        except (ValueError, UnicodeDecodeError):
            return self._invalid(100, "Invalid cursor or limit.")
        with self._lock:
            page = self.templates[start : start + limit]
            more = start + limit < len(self.templates)
        cursors = {
            "before": base64.urlsafe_b64encode(str(start).encode()).decode(),
            "after": base64.urlsafe_b64encode(str(start + len(page)).encode()).decode(),
        }
        paging: dict[str, Any] = {"cursors": cursors}
        if more:
            paging["next"] = (
                f"{self.base_url}/{self.waba_id}/message_templates?limit={limit}&after={cursors['after']}"
            )
        return self._reply(200, {"data": page, "paging": paging})

    def _upload(self, request: Request) -> _Reply:
        product = request.form.get("messaging_product")
        upload = request.files.get("file")
        mime_type = request.form.get("type")
        if product is None:
            return self._invalid(100, "The parameter messaging_product is required.")
        if product != "whatsapp":
            return self._invalid(100, payloads.bad_product(product))
        if upload is None:
            return self._invalid(100, "The parameter file is required.")
        if not mime_type:
            return self._invalid(100, "The parameter type is required.")
        data = upload.read()
        problem = payloads.upload_problem(mime_type, len(data))
        if problem is not None:
            return self._invalid(*problem)
        media_id = self.add_media(data, mime_type, upload.filename)
        return self._reply(200, {"id": media_id})

    def _object(self, method: str, object_id: str) -> _Reply:
        media = self.uploads.get(object_id)
        if media is not None and method == "DELETE":
            with self._lock:
                self.uploads.pop(object_id, None)
            return self._reply(200, {"success": True})
        if media is not None:
            url = f"{self.origin}/media-download/{object_id}?token={media.download_token}"
            return self._reply(
                200,
                {
                    "messaging_product": "whatsapp",
                    "url": url,
                    "mime_type": media.mime_type,
                    "sha256": media.sha256,
                    "file_size": media.file_size,
                    "id": object_id,
                },
            )
        if object_id in self.phone_numbers and method == "GET":
            return self._reply(200, self._phone_profile(object_id))
        return self._not_found(method, object_id)

    def _download(self, request: Request, media_id: str) -> _Reply:
        if not self._authorized(request):
            return self._reply(*payloads.graph_error(190, with_error_data=False))
        media = self.uploads.get(media_id)
        if media is None or request.args.get("token") != media.download_token:
            return self._not_found("GET", media_id)
        return 200, {"Content-Type": media.mime_type}, media.data

    def _phone_profile(self, phone_number_id: str) -> dict[str, Any]:
        return {
            "verified_name": "Test Business",
            "code_verification_status": "VERIFIED",
            "display_phone_number": self.phone_numbers[phone_number_id],
            "quality_rating": "GREEN",
            "platform_type": "CLOUD_API",
            "throughput": {"level": "STANDARD"},
            "id": phone_number_id,
        }

    def _invalid(self, code: int, details: str) -> _Reply:
        return self._reply(*payloads.graph_error(code, details=details))

    def _unsupported(self, method: str, object_id: str, http_status: int = 400) -> _Reply:
        message = (
            f"Unsupported {method.lower()} request. Object with ID '{object_id}' does not exist, "
            "cannot be loaded due to missing permissions, or does not support this operation."
        )
        return self._reply(
            *payloads.graph_error(
                100,
                http_status=http_status,
                message=message,
                error_subcode=33,
                error_type="GraphMethodException",
                with_error_data=False,
            )
        )

    def _not_found(self, method: str, object_id: str) -> _Reply:
        return self._unsupported(method, object_id, http_status=404)

    @staticmethod
    def _reply(status: int, obj: dict[str, Any]) -> _Reply:
        headers = {"Content-Type": "application/json; charset=UTF-8"}
        if status == 401:
            headers["WWW-Authenticate"] = _WWW_AUTHENTICATE
        return status, headers, json.dumps(obj).encode()
