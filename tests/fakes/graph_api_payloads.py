"""Meta's WhatsApp Cloud API shapes for the Graph API emulator (``tests/fakes/graph_api.py``).

No server here: Graph error objects, Meta's checks on a send body (``send_problem``), webhook
bodies (``messages`` field: inbound messages and statuses), the exact bytes Meta signs and the
``X-Hub-Signature-256`` value, and ``WebhookSide``, the webhook half of ``GraphEmulator``.

Sources: Meta's Cloud API error-codes page (error object syntax, titles and the HTTP status
of each code: throttling, re-engagement, delivery, payment and registration errors are
400, integrity errors 403, 190 is 401, 131000 is 500, 2 and 131016 are 503) and the
messages webhook reference (status, message, contacts and errors objects).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import random
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

import httpx

ERROR_CODES_URL = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"

# code -> (HTTP status, title, details) as Meta documents them.
KNOWN_ERRORS: dict[int, tuple[int, str, str]] = {
    2: (503, "API Service", "Temporary due to downtime or due to being overloaded."),
    4: (400, "Application request limit reached", "The app has reached its API call rate limit."),
    100: (400, "Invalid parameter", "The request included one or more unsupported or misspelled parameters."),
    190: (401, "Access token has expired", "Your access token has expired."),
    368: (
        403,
        "Temporarily blocked for policies violations",
        "The WhatsApp Business Account associated with the app has been restricted or disabled "
        "for violating a platform policy.",
    ),
    80007: (400, "Rate limit issues", "The WhatsApp Business Account has reached its rate limit."),
    130429: (
        400,
        "Rate limit hit",
        "Message failed to send because there were too many messages sent from this phone number "
        "in a short period of time.",
    ),
    131000: (500, "Something went wrong", "Message failed to send due to an unknown error."),
    131008: (400, "Required parameter is missing", "The request is missing a required parameter."),
    131009: (400, "Parameter value is not valid", "One or more parameter values are invalid."),
    131016: (503, "Service unavailable", "A service is temporarily unavailable."),
    131026: (400, "Message undeliverable", "Unable to deliver message."),
    131031: (403, "Account has been locked", "The WhatsApp Business Account has been locked."),
    131042: (
        400,
        "Business eligibility payment issue",
        "Message failed to send because there were one or more errors related to your payment method.",
    ),
    132000: (
        400,
        "Number of parameters does not match the expected number of params",
        "body: number of localizable_params does not match the expected number of params",
    ),
    132001: (
        404,
        "Template name does not exist in the translation",
        "template name does not exist in the translation",
    ),
    131047: (
        400,
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last "
        "replied to this number.",
    ),
    131048: (
        400,
        "Spam rate limit hit",
        "Message failed to send because there are restrictions on how many messages can be sent "
        "from this phone number.",
    ),
    131056: (
        400,
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone number "
        "to the same phone number in a short period of time.",
    ),
    133010: (400, "Phone number not registered", "The phone number is not registered on the platform."),
}

# Statuses in the order WhatsApp produces them; also used to give out-of-order deliveries
# realistic (ordered) event timestamps.
STATUS_ORDER = {"sent": 0, "delivered": 1, "read": 2, "played": 3, "failed": 1}

_sequence = itertools.count(1)


def fbtrace_id() -> str:
    return secrets.token_urlsafe(17)[:23]


def new_wamid(wa_id: str) -> str:
    """A WhatsApp message id: ``wamid.`` + base64, unique for the whole test process."""
    raw = f"{wa_id}:{next(_sequence)}:{secrets.token_hex(8)}".encode()
    return "wamid." + base64.b64encode(raw).decode()


def new_media_id() -> str:
    """A numeric media id (Meta's are 15-16 digits), unique for the whole test process."""
    return str(1_000_000_000_000_000 + next(_sequence) * 1000 + secrets.randbelow(1000))


def graph_error(
    code: int,
    *,
    http_status: int | None = None,
    title: str | None = None,
    details: str | None = None,
    message: str | None = None,
    error_subcode: int | None = None,
    error_type: str = "OAuthException",
    with_error_data: bool = True,
) -> tuple[int, dict[str, Any]]:
    """Meta's error object and its HTTP status; unknown codes default to 400."""
    known_status, known_title, known_details = KNOWN_ERRORS.get(code, (400, f"Error {code}", ""))
    error: dict[str, Any] = {
        "message": message or f"(#{code}) {title or known_title}",
        "type": error_type,
        "code": code,
    }
    if with_error_data:
        error["error_data"] = {
            "messaging_product": "whatsapp",
            "details": known_details if details is None else details,
        }
    if error_subcode is not None:
        error["error_subcode"] = error_subcode
    error["fbtrace_id"] = fbtrace_id()
    return (http_status or known_status), {"error": error}


def encode(payload: dict[str, Any]) -> bytes:
    """The exact bytes posted (and signed) for a webhook payload."""
    return json.dumps(payload, separators=(",", ":")).encode()


def signature(app_secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256`` value: ``sha256=<hex hmac-sha256(app_secret, body)>``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def envelope(waba_id: str, display_phone_number: str, phone_number_id: str, **value: Any) -> dict[str, Any]:
    """A whole ``messages``-field webhook body around one change value."""
    change_value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": display_phone_number, "phone_number_id": phone_number_id},
        **value,
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"value": change_value, "field": "messages"}]}],
    }


def combine(*payloads: dict[str, Any]) -> dict[str, Any]:
    """One webhook body carrying the entries of several (Meta batches events this way)."""
    return {
        "object": "whatsapp_business_account",
        "entry": [entry for payload in payloads for entry in payload["entry"]],
    }


def status_item(
    wamid: str,
    status: str,
    *,
    recipient: str | None,
    timestamp: int | None = None,
    error_code: int | None = None,
    error_title: str | None = None,
    error_details: str | None = None,
    recipient_user_id: str | None = None,
) -> dict[str, Any]:
    """One ``statuses[]`` item. ``sent``/``delivered`` carry conversation and pricing (as
    Meta's do); ``failed`` (or any status given an ``error_code``) carries ``errors``."""
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(time.time()) if timestamp is None else timestamp),
    }
    if recipient is not None:
        item["recipient_id"] = recipient
    if recipient_user_id is not None:
        item["recipient_user_id"] = recipient_user_id
    if status in ("sent", "delivered"):
        conversation: dict[str, Any] = {"id": hashlib.sha256(wamid.encode()).hexdigest()[:32]}
        if status == "sent":
            conversation["expiration_timestamp"] = str(int(item["timestamp"]) + 86400)
        conversation["origin"] = {"type": "service"}
        item["conversation"] = conversation
        item["pricing"] = {
            "billable": False,
            "pricing_model": "PMP",
            "type": "free_customer_service",
            "category": "service",
        }
    if status == "failed" or error_code is not None:
        code = 131026 if error_code is None else error_code
        _, known_title, known_details = KNOWN_ERRORS.get(code, (400, f"Error {code}", ""))
        title = error_title or known_title
        item["errors"] = [
            {
                "code": code,
                "title": title,
                "message": title,
                "error_data": {"details": known_details if error_details is None else error_details},
                "href": ERROR_CODES_URL,
            }
        ]
    return item


def inbound_message(
    *,
    from_phone: str | None,
    wamid: str,
    timestamp: int,
    text: str,
    user_id: str | None = None,
    media: tuple[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One ``messages[]`` item: text, or ``media=(type, object)`` for image/document/…"""
    message: dict[str, Any] = {}
    if from_phone is not None:
        message["from"] = from_phone
    if user_id is not None:
        message["from_user_id"] = user_id
    message.update({"id": wamid, "timestamp": str(timestamp)})
    if media is None:
        message.update({"type": "text", "text": {"body": text}})
    else:
        message.update({"type": media[0], media[0]: media[1]})
    return message


def contact(*, name: str, wa_id: str | None, user_id: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"profile": {"name": name}}
    if wa_id is not None:
        item["wa_id"] = wa_id
    if user_id is not None:
        item["user_id"] = user_id
    return item


class WebhookSide:
    """What Meta POSTs to us: webhook bodies, their signature, and posting them to a live
    server. Mixed into ``GraphEmulator``, which provides the attributes below."""

    app_secret: str
    waba_id: str
    display_phone_number: str
    phone_number_id: str
    uploads: Mapping[str, Any]  # media id -> UploadedMedia (mime_type, sha256, filename)

    def status_payload(
        self,
        wamid: str,
        status: str,
        *,
        recipient: str = "5511999990000",
        error_code: int | None = None,
        error_title: str | None = None,
        timestamp: int | None = None,
        error_details: str | None = None,
        recipient_user_id: str | None = None,
    ) -> dict[str, Any]:
        """A ``statuses`` webhook body; ``failed`` defaults to 131026 Message undeliverable."""
        item = status_item(
            wamid,
            status,
            recipient=recipient,
            timestamp=timestamp,
            error_code=error_code,
            error_title=error_title,
            error_details=error_details,
            recipient_user_id=recipient_user_id,
        )
        return self._envelope(statuses=[item])

    def message_payload(
        self,
        *,
        from_phone: str | None = "5511999990000",
        text: str = "hi",
        name: str = "Customer",
        wamid: str | None = None,
        user_id: str | None = None,
        timestamp: int | None = None,
        media_id: str | None = None,
        media_type: str = "image",
        caption: str | None = None,
    ) -> dict[str, Any]:
        """An inbound ``messages`` webhook body (with ``contacts``). ``from_phone=None`` with a
        ``user_id`` is a sender known only by their business-scoped user id. With ``media_id``
        the message is of ``media_type`` (mime type and sha256 taken from ``uploads``)."""
        media = None
        if media_id is not None:
            known = self.uploads.get(media_id)
            obj: dict[str, Any] = {
                "mime_type": known.mime_type if known else "image/jpeg",
                "sha256": known.sha256 if known else hashlib.sha256(media_id.encode()).hexdigest(),
                "id": media_id,
            }
            if caption is not None:
                obj["caption"] = caption
            if media_type == "document" and known and known.filename:
                obj["filename"] = known.filename
            media = (media_type, obj)
        message = inbound_message(
            from_phone=from_phone,
            wamid=wamid or new_wamid(from_phone or user_id or "0"),
            timestamp=int(time.time()) if timestamp is None else timestamp,
            text=text,
            user_id=user_id,
            media=media,
        )
        sender = contact(name=name, wa_id=from_phone, user_id=user_id)
        return self._envelope(contacts=[sender], messages=[message])

    def sign(self, body: bytes) -> str:
        """``sha256=<hex hmac-sha256(app_secret, body)>``."""
        return signature(self.app_secret, body)

    def signed(self, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The exact body and headers Meta would send (for a Flask test client, say)."""
        body = encode(payload)
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": self.sign(body)}
        return body, headers

    def post_webhook(self, url: str, payload: dict[str, Any], *, timeout: float = 30.0) -> httpx.Response:
        """POST ``payload`` to a live server, signed like Meta does."""
        body, headers = self.signed(payload)
        return httpx.post(url, content=body, headers=headers, timeout=timeout)

    def post_statuses(
        self,
        url: str,
        wamid: str,
        statuses: list[str],
        *,
        duplicate: bool = False,
        recipient: str = "5511999990000",
    ) -> list[httpx.Response]:
        """Fire ``statuses`` in the given (possibly out-of-order) order, each twice when
        ``duplicate``. Event timestamps follow WhatsApp's order (sent < delivered < read)."""
        base = int(time.time())
        responses = []
        for status in statuses:
            payload = self.status_payload(
                wamid, status, recipient=recipient, timestamp=base + STATUS_ORDER.get(status, 0)
            )
            for _ in range(2 if duplicate else 1):
                responses.append(self.post_webhook(url, payload))
        return responses

    def _envelope(self, **value: Any) -> dict[str, Any]:
        return envelope(self.waba_id, self.display_phone_number, self.phone_number_id, **value)


TEXT_MAX = 4096
MEDIA_TYPES = ("image", "document", "audio", "video", "sticker")
OTHER_TYPES = ("template", "interactive", "location", "contacts", "reaction")


def bad_product(product: object) -> str:
    return f'Param messaging_product must be one of {{WHATSAPP}} - got "{product}".'


def send_problem(body: dict[str, Any]) -> tuple[int, str] | None:
    """Meta's checks on a /messages body: ``(code, details)`` of the first problem, or None."""
    product = body.get("messaging_product")
    if product is None:
        return 100, "The parameter messaging_product is required."
    if product != "whatsapp":
        return 100, bad_product(product)
    if "status" in body:
        if body["status"] != "read" or not body.get("message_id"):
            return 100, "Param status must be read, with the parameter message_id."
        return None
    if body.get("recipient_type", "individual") not in ("individual", "group"):
        return 100, "Param recipient_type must be one of {INDIVIDUAL, GROUP}."
    if not isinstance(body.get("to"), str) or not body["to"].strip():
        return 100, "The parameter to is required."
    kind = body.get("type", "text")
    if kind not in ("text", *MEDIA_TYPES, *OTHER_TYPES):
        return 100, f'Param type must be one of {{TEXT, IMAGE, DOCUMENT, AUDIO, VIDEO, …}} - got "{kind}".'
    obj = body.get(kind)
    if kind == "contacts":
        return None if isinstance(obj, list) and obj else (100, "The parameter contacts is required.")
    if not isinstance(obj, dict) or not obj:
        return 100, f"The parameter {kind} is required."
    if kind == "text":
        text = obj.get("body")
        if not isinstance(text, str) or not text:
            return 100, "The parameter text['body'] is required."
        if len(text) > TEXT_MAX:
            return 100, f"Param text['body'] must be at most {TEXT_MAX} characters long."
    if kind in MEDIA_TYPES and not (obj.get("id") or obj.get("link")):
        return 131009, f"Please specify either a media id or a link for the parameter {kind}."
    if kind == "template":
        if not obj.get("name"):
            return 100, "The parameter template['name'] is required."
        language = obj.get("language")
        if not isinstance(language, dict) or not language.get("code"):
            return 100, "The parameter template['language']['code'] is required."
    return None


def template(
    name: str,
    body: str,
    *,
    language: str = "pt_BR",
    status: str = "APPROVED",
    category: str = "UTILITY",
    header: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A message template as ``GET /<waba_id>/message_templates`` lists it. Placeholders in
    ``body`` are ``{{1}}``… (POSITIONAL) or ``{{name}}`` (NAMED)."""
    names = re.findall(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}", body)
    named = bool(names) and not all(n.isdigit() for n in names)
    components: list[dict[str, Any]] = []
    if header is not None:
        components.append({"type": "HEADER", **header})
    body_component: dict[str, Any] = {"type": "BODY", "text": body}
    if names and named:
        body_component["example"] = {
            "body_text_named_params": [{"param_name": n, "example": n} for n in names]
        }
    elif names:
        body_component["example"] = {"body_text": [[f"example {n}" for n in names]]}
    components.append(body_component)
    return {
        "name": name,
        "parameter_format": "NAMED" if named else "POSITIONAL",
        "components": components,
        "language": language,
        "status": status,
        "category": category,
        "id": str(random.randint(10**14, 10**15 - 1)),
    }


def template_problem(known: list[dict[str, Any]], obj: dict[str, Any]) -> tuple[int, str] | None:
    """Meta's checks of a template send against the account's templates."""
    language = (obj.get("language") or {}).get("code")
    found = next((t for t in known if t["name"] == obj.get("name") and t["language"] == language), None)
    if found is None or found["status"] != "APPROVED":
        return 132001, f"template name ({obj.get('name')}) does not exist in {language}"
    body = next((c for c in found["components"] if c["type"] == "BODY"), {"text": ""})
    expected = len(re.findall(r"\{\{\s*[A-Za-z0-9_]+\s*\}\}", body.get("text", "")))
    given = sum(
        len(c.get("parameters", []))
        for c in obj.get("components", [])
        if isinstance(c, dict) and str(c.get("type", "")).lower() == "body"
    )
    if given != expected:
        return (
            132000,
            f"body: number of localizable_params ({given}) does not match the expected number "
            f"of params ({expected})",
        )
    return None


# Meta's supported media (cloud-api/reference/media#supported-media-types): type → largest size.
MB = 1024 * 1024
UPLOAD_LIMITS = {
    **dict.fromkeys(("image/jpeg", "image/png"), 5 * MB),
    **dict.fromkeys(("audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"), 16 * MB),
    **dict.fromkeys(("video/mp4", "video/3gpp"), 16 * MB),
    "image/webp": 500 * 1024,
    **dict.fromkeys(
        (
            "text/plain",
            "application/pdf",
            "application/msword",
            "application/vnd.ms-excel",
            "application/vnd.ms-powerpoint",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        ),
        100 * MB,
    ),
}


def upload_problem(mime_type: str, size: int) -> tuple[int, str] | None:
    """Why Meta refuses a media upload (error 131053), or None."""
    limit = UPLOAD_LIMITS.get(mime_type.split(";")[0].strip())
    if limit is None:
        return 131053, f"Media upload error: Unsupported file type {mime_type}"
    if size > limit:
        return 131053, f"Media upload error: {size} bytes is over the {limit} bytes limit for {mime_type}"
    return None
