"""Domain errors and the one place that maps them to HTTP (JSON for the API, pages otherwise)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class DomainError(Exception):
    """A user-caused error with an HTTP status, a stable snake_case code and a human message."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str | None = None, *, code: str | None = None, status: int | None = None):
        super().__init__(message or self.default_message())
        self.message = message or self.default_message()
        if code:
            self.code = code
        if status:
            self.status = status

    def default_message(self) -> str:
        return _("The request could not be processed.")


class NotFound(DomainError):
    status = 404
    code = "not_found"

    def __init__(self, what: str | None = None):
        # ``what`` is for logs only: the answer never says whether the id exists elsewhere.
        super().__init__(_("Not found."))
        self.what = what


class Forbidden(DomainError):
    status = 403
    code = "forbidden"

    def default_message(self) -> str:
        return _("You do not have permission to do this.")


class Conflict(DomainError):
    status = 409
    code = "conflict"


class ValidationFailed(DomainError):
    status = 422
    code = "invalid"


class TooManyRequests(DomainError):
    status = 429
    code = "rate_limited"

    def default_message(self) -> str:
        return _("Too many attempts. Wait a few minutes and try again.")


def wants_json() -> bool:
    return request.path.startswith(("/api/", "/webhooks/", "/healthz", "/readyz", "/metrics")) or (
        request.accept_mimetypes.best == "application/json" and request.headers.get("HX-Request") != "true"
    )


def json_error(status: int, code: str, message: str, **extra: Any) -> Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message, **extra}}
    response = jsonify(body)
    response.status_code = status
    return response


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def _max_upload() -> str:
    from flask import current_app

    from crm.media.limits import LARGEST_UPLOAD, human_size

    limit = int(current_app.config.get("MAX_CONTENT_LENGTH") or 0)
    return human_size(min(limit, LARGEST_UPLOAD) if limit else LARGEST_UPLOAD)


def _error_page(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template("errors/error.html", status=status, title=title, message=message), status


def setup_errors(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def domain_error(error: DomainError) -> Any:
        if wants_json():
            return json_error(error.status, error.code, error.message)
        return _error_page(error.status, error.message, error.message)

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> Any:
        message = _("Your form expired or was sent from elsewhere. Reload the page and try again.")
        if wants_json():
            return json_error(400, "csrf_failed", message)
        return _error_page(400, _("Form expired"), message)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        status = error.code or 500
        code = _HTTP_CODES.get(status, "error")
        titles = {
            400: _("Bad request"),
            403: _("Not allowed"),
            404: _("Not found"),
            405: _("Not allowed"),
            413: _("Too large"),
            429: _("Too many requests"),
        }
        messages = {
            400: _("The request could not be processed."),
            403: _("You do not have permission to do this."),
            404: _("Not found."),
            405: _("This method is not allowed here."),
            413: _("The upload is too large: files can be at most %(size)s.", size=_max_upload()),
            429: _("Too many attempts. Wait a few minutes and try again."),
        }
        message = messages.get(status, error.description or error.name)
        if wants_json():
            return json_error(status, code, message)
        return _error_page(status, titles.get(status, error.name), message)

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Any:
        log.exception("unhandled error")
        message = _("Something went wrong on our side. It was logged; try again in a moment.")
        if wants_json():
            return json_error(500, "internal_error", message)
        return _error_page(500, _("Server error"), message)
