"""Browser tests: the real app on a local port, driven by Playwright with Debian's Chromium.

The server runs the session app (``_app``) in a daemon thread; each test creates its data
through the ``app`` fixture (committed, so the server thread sees it), and ``app`` empties the
tables afterwards. Playwright is imported lazily so the rest of the suite does not need it.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests import factories
from tests.services import require_service

if TYPE_CHECKING:
    from playwright.sync_api import (
        APIResponse,
        Browser,
        ConsoleMessage,
        Error,
        Locator,
        Page,
        Route,
        ViewportSize,
    )

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        require_service(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_service("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class BrowserProblems:
    """Console errors and uncaught page errors (a CSP violation is a console error)."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return self.console_errors + self.page_errors


_reports = pytest.StashKey[dict[str, pytest.TestReport]]()
_problems = pytest.StashKey[BrowserProblems]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so ``page`` knows whether the test failed."""
    report = yield
    item.stash.setdefault(_reports, {})[report.when] = report
    return report


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(locale="en-US", viewport=DESKTOP)
    context.set_default_timeout(10_000)
    page = context.new_page()
    problems = BrowserProblems()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.console_errors.append(f"{message.text} ({message.location.get('url', '')})")

    def on_page_error(error: Error) -> None:
        problems.page_errors.append(f"{error.name}: {error.message}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    request.node.stash[_problems] = problems
    try:
        yield page
    finally:
        call = request.node.stash.get(_reports, {}).get("call")
        if call is not None and call.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            name = re.sub(r"[^\w.-]+", "_", request.node.nodeid)
            try:
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            except Exception as exc:  # a broken page must not hide the real failure
                print(f"could not save a screenshot: {exc}")
        context.close()


@pytest.fixture
def browser_problems(page: Page, request: pytest.FixtureRequest) -> BrowserProblems:
    """What went wrong inside the page so far: console errors and uncaught exceptions."""
    node: pytest.Item = request.node
    return node.stash[_problems]


def composer_ready(page: Page) -> Locator:
    """The open thread's reply box once htmx has wired it, as a person starts typing once it shows
    (until htmx has, an Enter sends the form without htmx)."""
    page.wait_for_function("() => document.querySelector('textarea[data-composer]')?.['htmx-internal-data']")
    return page.locator("textarea[data-composer]")


def hold_answers(page: Page, url: re.Pattern[str] | str) -> list[tuple[Route, APIResponse]]:
    """The page's requests to ``url`` reach the server at once; their answers reach the page when
    the test fulfils each held route with its answer."""
    held: list[tuple[Route, APIResponse]] = []

    def hold(route: Route) -> None:
        held.append((route, route.fetch()))

    page.route(url, hold)
    return held


def wait_for_held(page: Page, held: list[tuple[Route, APIResponse]]) -> tuple[Route, APIResponse]:
    """The one request held so far: its route, and the answer to fulfil it with."""
    for _ in range(100):  # the route's handler runs while the page waits (the server answers first)
        if held:
            break
        page.wait_for_timeout(100)
    assert len(held) == 1
    return held[0]


SENDS = "**/conversations/*/messages"  # the reply box's sends


def send_held(page: Page, box: Locator, text: str) -> tuple[Route, APIResponse, str]:
    """``text`` sent from the reply box, its answer held: the route to fulfil with the answer (the
    page goes on routing sends until ``page.unroute(SENDS)``), and the send's key."""
    held = hold_answers(page, SENDS)
    box.fill(text)
    key = page.locator("input[name=send_key]").input_value()
    box.press("Enter")
    route, answer = wait_for_held(page, held)
    return route, answer, key


def sign_in(page: Page, base_url: str, email: str, password: str = factories.PASSWORD) -> None:
    """Open the app, follow the redirect to the login page and sign in through the form."""
    page.goto(f"{base_url}/")
    page.wait_for_url(re.compile(r"/login(\?.*)?$"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
