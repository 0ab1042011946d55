"""WhatsApp Cloud API: a thin httpx client over Meta's Graph API and the error mapping.

The base URL comes from the account (``graph_url``) or GRAPH_API_URL, so tests point it at a
local emulator; everything else is the real code path.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from dataclasses import dataclass, replace
from typing import IO, Any

import httpx
from flask import current_app

from crm.crypto import SecretUnreadable, decrypt_json
from crm.whatsapp.models import Health, WhatsAppAccount
from crm.whatsapp.providers.base import ErrorAction, OutboundRequest, ProviderError, SendResult

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(20.0, connect=5.0)
MEDIA_TYPES = ("image", "document", "audio", "video", "sticker")


@dataclass(frozen=True)
class GraphError:
    action: ErrorAction
    retry_after: float | None = None
    health: str | None = None
    pause_account_for: float | None = None
    needs_template: bool = False


# Meta's error codes (developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes) and
# what we do about each. Codes not listed: 5xx retry, 4xx fail the message.
GRAPH_ERRORS: dict[int, GraphError] = {
    # Throughput reached: the number waits a second, not longer. Our limiter already keeps to the
    # number's rate, so a 130429 means a send arrived a little early (network jitter); a 5 s pause
    # cost ~400 sends at 80/s each time (bench/broadcast.py).
    130429: GraphError(ErrorAction.RETRY, retry_after=1, pause_account_for=1),
    131056: GraphError(ErrorAction.RETRY, retry_after=60),  # pair rate limit: this customer, later
    80007: GraphError(ErrorAction.RETRY, retry_after=60, pause_account_for=60),  # WABA rate limit
    4: GraphError(ErrorAction.RETRY, retry_after=60, pause_account_for=60),  # app request limit
    131000: GraphError(ErrorAction.RETRY, retry_after=10),  # something went wrong
    131016: GraphError(ErrorAction.RETRY, retry_after=30),  # service unavailable
    131047: GraphError(ErrorAction.FAIL, needs_template=True),  # outside the 24 h window
    131026: GraphError(ErrorAction.FAIL),  # undeliverable
    131051: GraphError(ErrorAction.FAIL),  # unsupported message type
    131053: GraphError(ErrorAction.FAIL),  # media upload error
    131009: GraphError(ErrorAction.FAIL),  # parameter value not valid
    132000: GraphError(ErrorAction.FAIL),  # template parameter count mismatch
    132001: GraphError(ErrorAction.FAIL),  # template does not exist
    100: GraphError(ErrorAction.FAIL),  # invalid parameter
    131048: GraphError(ErrorAction.ACCOUNT_DOWN, health=Health.DEGRADED.value, pause_account_for=3600),
    368: GraphError(ErrorAction.ACCOUNT_DOWN, health=Health.BLOCKED.value),  # policy block
    131031: GraphError(ErrorAction.ACCOUNT_DOWN, health=Health.BLOCKED.value),  # account locked
    190: GraphError(ErrorAction.ACCOUNT_DOWN, health=Health.LOGGED_OUT.value),  # token expired
    133010: GraphError(ErrorAction.ACCOUNT_DOWN, health=Health.LOGGED_OUT.value),  # not registered
    131042: GraphError(ErrorAction.ACCOUNT_DOWN, health=Health.BLOCKED.value),  # payment issue
}


def graph_error_from_response(response: httpx.Response) -> ProviderError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    raw_code = error.get("code")
    code = int(raw_code) if isinstance(raw_code, int | str) and str(raw_code).isdigit() else None
    details = (
        (error.get("error_data") or {}).get("details") if isinstance(error.get("error_data"), dict) else None
    )
    title = str(details or error.get("message") or f"HTTP {response.status_code}")[:500]
    rule = GRAPH_ERRORS.get(code) if code is not None else None
    if rule is None:
        transient = response.status_code >= 500 or response.status_code == 429
        rule = GraphError(ErrorAction.RETRY, retry_after=30) if transient else GraphError(ErrorAction.FAIL)
    return ProviderError(
        str(code if code is not None else response.status_code),
        title,
        action=rule.action,
        retry_after=rule.retry_after,
        health=rule.health,
        pause_account_for=rule.pause_account_for,
        needs_template=rule.needs_template,
    )


def message_body(request: OutboundRequest) -> dict[str, Any]:
    """Meta's JSON body for ``POST /<phone_number_id>/messages``."""
    body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": request.to}
    if request.recipient_bsuid and not request.to.startswith("+"):
        body.pop("to")
        body["recipient"] = request.recipient_bsuid
    else:
        body["to"] = request.to.lstrip("+")
    if request.reply_to:
        body["context"] = {"message_id": request.reply_to}
    kind = request.type
    body["type"] = kind
    payload = request.payload
    if kind == "text":
        body["text"] = {"body": request.text, "preview_url": bool(payload.get("preview_url", False))}
    elif kind in MEDIA_TYPES:
        media: dict[str, Any] = {}
        if payload.get("media_id"):
            media["id"] = payload["media_id"]
        else:
            media["link"] = payload["link"]
        if request.text and kind in ("image", "document", "video"):
            media["caption"] = request.text
        filename = payload.get("filename") or (request.media.filename if request.media else None)
        if kind == "document" and filename:
            media["filename"] = filename
        body[kind] = media
    elif kind == "template":
        template: dict[str, Any] = {
            "name": payload["name"],
            "language": {"code": payload.get("language", "pt_BR")},
        }
        if payload.get("components"):
            template["components"] = payload["components"]
        body["template"] = template
    else:
        raise ProviderError(
            "unsupported_type", f"Cannot send messages of type {kind}", action=ErrorAction.FAIL
        )
    return body


_pool: dict[int, httpx.Client] = {}
_pool_lock = threading.Lock()


def shared_client() -> httpx.Client:
    """One connection pool per process: a new client per call would load the TLS certificates
    again each time (about 30 ms of CPU) and open a new connection to Meta for every message."""
    pid = os.getpid()  # a forked worker builds its own: connections are not shared across forks
    client = _pool.get(pid)
    if client is None:
        with _pool_lock:
            client = _pool.get(pid)
            if client is None:
                client = httpx.Client(timeout=TIMEOUT, limits=httpx.Limits(max_connections=64))
                _pool.clear()
                _pool[pid] = client
    return client


class CloudClient:
    """Calls to one Cloud API number. Secrets are decrypted only here, only for the call."""

    def __init__(self, account: WhatsAppAccount):
        settings = account.settings or {}
        self.phone_number_id = str(settings.get("phone_number_id", ""))
        self.base_url = str(settings.get("graph_url") or current_app.config["GRAPH_API_URL"]).rstrip("/")
        try:
            self._token = str(decrypt_json(account.secrets_encrypted).get("access_token", ""))
        except SecretUnreadable:
            raise ProviderError(
                "secrets_unreadable",
                "The stored access token can't be decrypted (SECRET_KEY changed?): enter it again.",
                action=ErrorAction.ACCOUNT_DOWN,
                health=Health.LOGGED_OUT.value,
            ) from None

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            headers = {**kwargs.pop("headers", {}), **self._auth}
            response = shared_client().request(method, url, headers=headers, **kwargs)
        except httpx.TimeoutException as exc:
            # The request may have reached Meta: retrying risks the one allowed duplicate; say so.
            log.warning("Cloud API timeout on %s %s: a retry may duplicate", method, url.split("?")[0])
            raise ProviderError(
                "timeout", "The Cloud API did not answer in time", action=ErrorAction.RETRY, retry_after=15
            ) from exc
        except httpx.HTTPError as exc:
            raise ProviderError(
                "network",
                f"Cannot reach the Cloud API: {exc.__class__.__name__}",
                action=ErrorAction.RETRY,
                retry_after=30,
            ) from exc
        if response.status_code >= 400:
            raise graph_error_from_response(response)
        return response

    def send(self, request: OutboundRequest) -> SendResult:
        uploaded = None
        if request.media is not None and request.media.uploaded_id and not request.payload.get("media_id"):
            request = replace(request, payload={**request.payload, "media_id": request.media.uploaded_id})
        if request.media is not None and not request.payload.get("media_id"):
            # Our file goes to Meta first (POST /<phone_number_id>/media), then the message names it.
            media = request.media
            mime, name = media.mime_type.split(";")[0], media.filename or "file"
            if media.open is not None:
                with media.open() as stream:  # streamed: a large document is never held whole
                    media_id = self.upload_media(stream, mime, name)
            else:
                media_id = self.upload_media(media.load(), mime, name)
            request = replace(request, payload={**request.payload, "media_id": media_id})
            uploaded = media_id
        response = self._call(
            "POST", f"{self.base_url}/{self.phone_number_id}/messages", json=message_body(request)
        )
        try:
            body = response.json()
            message_id = body["messages"][0]["id"]
            if not isinstance(message_id, str) or not message_id:
                raise TypeError("id")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            # Meta accepted the request (2xx) but we can't read its answer: the message may well
            # be on its way, so retrying could send it twice. Fail it, visibly, instead.
            raise ProviderError(
                "unconfirmed",
                "The Cloud API accepted the message but its answer could not be read; check the "
                "conversation on the phone before sending again.",
                action=ErrorAction.FAIL,
            ) from None
        return SendResult(provider_message_id=message_id, uploaded_media_id=uploaded)

    def list_templates(self, waba_id: str, max_pages: int = 50) -> list[dict[str, Any]]:
        """Every message template of the WhatsApp Business Account, page by page. The next page is
        asked for with the ``after`` cursor on our own URL: Meta's ``paging.next`` URL carries the
        access token in its query string, which must never reach a log."""
        url = f"{self.base_url}/{waba_id}/message_templates"
        found: list[dict[str, Any]] = []
        after: str | None = None
        for _page in range(max_pages):
            params = {"limit": "100", **({"after": after} if after else {})}
            try:
                body = self._call("GET", url, params=params).json()
            except ValueError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("data", []), list):
                raise ProviderError(
                    "bad_response", "The Cloud API's template list could not be read", action=ErrorAction.FAIL
                )
            found.extend(t for t in body.get("data", []) if isinstance(t, dict))
            paging = body.get("paging")
            paging = paging if isinstance(paging, dict) else {}
            cursors = paging.get("cursors")
            cursors = cursors if isinstance(cursors, dict) else {}
            after = cursors.get("after") if paging.get("next") else None
            if not isinstance(after, str) or not after:
                break
        return found

    def upload_media(self, data: bytes | IO[bytes], mime_type: str, filename: str) -> str:
        response = self._call(
            "POST",
            f"{self.base_url}/{self.phone_number_id}/media",
            data={"messaging_product": "whatsapp", "type": mime_type},
            files={"file": (filename, data, mime_type)},
        )
        try:
            media_id = response.json()["id"]
        except (ValueError, KeyError, TypeError):
            media_id = None
        if not isinstance(media_id, str) or not media_id:
            raise ProviderError(
                "bad_response", "The Cloud API's answer to a media upload could not be read",
                action=ErrorAction.RETRY, retry_after=30,
            )  # fmt: skip
        return media_id

    def media_info(self, media_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"{self.base_url}/{media_id}").json())

    def download_media_to(self, media_id: str, out: IO[bytes], max_bytes: int) -> str:
        """Stream an inbound media into ``out`` (refused past ``max_bytes``); its MIME type.

        ``GET /<media_id>`` gives a short-lived URL that needs the same bearer token."""
        try:
            info = self.media_info(media_id)
        except ProviderError as exc:
            if exc.code == "100":  # unknown or expired id: asking again won't help
                raise ProviderError(exc.code, exc.title, action=ErrorAction.FAIL) from None
            raise
        url = info.get("url")
        declared = info.get("file_size")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ProviderError(
                "bad_response", "The Cloud API gave no download URL", action=ErrorAction.RETRY
            )
        if isinstance(declared, int) and declared > max_bytes:
            raise ProviderError("too_large", "The media is larger than allowed", action=ErrorAction.FAIL)
        try:
            with shared_client().stream("GET", url, headers=self._auth) as response:
                if response.status_code >= 400:
                    response.read()
                    raise graph_error_from_response(response)
                size = 0
                for chunk in response.iter_bytes(1024 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ProviderError(
                            "too_large", "The media is larger than allowed", action=ErrorAction.FAIL
                        )
                    out.write(chunk)
                return str(info.get("mime_type") or response.headers.get("content-type", ""))
        except httpx.HTTPError as exc:
            raise ProviderError(
                "network", f"Cannot download the media: {exc.__class__.__name__}",
                action=ErrorAction.RETRY, retry_after=30,
            ) from exc  # fmt: skip

    def download_media(self, media_id: str, max_bytes: int = 100 * 1024 * 1024) -> tuple[bytes, str]:
        """The bytes and MIME type of an inbound media, in memory (small files, tests)."""
        out = io.BytesIO()
        mime = self.download_media_to(media_id, out, max_bytes)
        return out.getvalue(), mime


class CloudProvider:
    name = "cloud"

    def send(self, account: WhatsAppAccount, request: OutboundRequest) -> SendResult:
        return CloudClient(account).send(request)

    def default_limits(self, account: WhatsAppAccount) -> tuple[int | None, int | None]:
        return 80, None  # Meta's default throughput per number
