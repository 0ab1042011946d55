"""The one place that decides whether a request gets a whole page or just a fragment."""

from __future__ import annotations

from typing import Any

from flask import render_template, request


def wants_fragment() -> bool:
    """An HTMX swap; not a boosted link, nor htmx restoring a page missing from its history cache
    (both want the whole page)."""
    headers = request.headers
    return (
        headers.get("HX-Request") == "true"
        and headers.get("HX-Boosted") != "true"
        and headers.get("HX-History-Restore-Request") != "true"
    )


def render(page: str, fragment: str, **context: Any) -> str:
    """Render the fragment for HTMX swaps and the full page (which includes it) otherwise."""
    return render_template(fragment if wants_fragment() else page, **context)
