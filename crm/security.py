"""Cookies, security headers and turning a session cookie into the signed-in person."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, make_response, redirect, request, session
from flask.sessions import SecureCookieSessionInterface
from flask_login import login_url
from werkzeug.middleware.proxy_fix import ProxyFix

from crm.auth.models import User
from crm.extensions import login_manager

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


class CookieSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever the request came over HTTPS.

    The cookie only carries the CSRF secret and the random session token; who is signed in
    is decided by the server-side ``user_sessions`` row that token points at.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure


def content_security_policy() -> str:
    """The page CSP; with S3 media, images and players may load from the bucket's origin (where
    the app redirects them with a short-lived signed URL)."""
    from flask import current_app

    from crm.media.storage import media_origin

    origin = media_origin(current_app)
    if not origin:
        return CSP
    return CSP.replace("img-src 'self'", f"img-src 'self' {origin}").replace(
        "media-src 'self'", f"media-src 'self' {origin}"
    )


def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", content_security_policy())
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    if "Cache-Control" not in headers and response.mimetype == "text/html":
        headers["Cache-Control"] = "no-store"
    return response


def _load_user_from_session(_request: Any) -> User | None:
    from crm.auth.services import load_session

    token = session.get("sid")
    if not isinstance(token, str):
        return None
    live = load_session(token)
    if live is None:
        session.pop("sid", None)
        return None
    g.user_session = live.session
    g.membership = live.membership
    g.workspace_id = live.membership.workspace_id
    return live.user


def setup_security(app: Flask) -> None:
    app.session_interface = CookieSessionInterface()
    if app.config["TRUSTED_PROXIES"]:
        n = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    login_manager.init_app(app)
    login_manager.session_protection = None  # our session rows do this job
    login_manager.login_view = "auth.login"
    login_manager.login_message = None
    login_manager.unauthorized_handler(_sign_in_first)
    login_manager.request_loader(_load_user_from_session)
    app.after_request(_security_headers)


def _sign_in_first() -> Any:
    """A request without a live session goes to the sign-in page, and comes back after it.

    A page's HTMX request (a filter changed, a reply sent, the refetch after a reconnect) from a
    tab whose session ended or was revoked would otherwise have the sign-in page swapped into a
    fragment of the page: it gets ``HX-Redirect`` instead, and htmx loads the sign-in page as the
    whole page; back from it, the agent lands on the page the tab showed."""
    if request.headers.get("HX-Request") != "true":
        return redirect(login_url(login_manager.login_view, next_url=request.url))
    shown = request.headers.get("HX-Current-URL") or request.url
    response = make_response("", 401)
    response.headers["HX-Redirect"] = login_url(login_manager.login_view, next_url=shown)
    return response
