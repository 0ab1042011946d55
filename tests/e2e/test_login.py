"""Signing in and out through the real pages, in a real browser."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests import factories
from tests.e2e.conftest import PHONE, BrowserProblems, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

HOME = re.compile(r"^http://127\.0\.0\.1:\d+/$")
LOGIN = re.compile(r"/login(\?.*)?$")


def test_login_through_the_real_page_shows_the_inbox_shell(
    page: Page, live_server: str, owner: factories.Person, browser_problems: BrowserProblems
) -> None:
    from playwright.sync_api import expect

    page.goto(f"{live_server}/")
    expect(page).to_have_url(LOGIN)
    expect(page).to_have_title(re.compile("Sign in"))
    page.get_by_label("Email").fill("owner@acme.example")
    page.get_by_label("Password").fill(factories.PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(HOME)
    expect(page).to_have_title(re.compile("Inbox"))
    nav = page.get_by_role("navigation", name="Main")
    for name in ("Inbox", "Leads", "Broadcasts", "Settings"):
        expect(nav.get_by_role("link", name=name)).to_be_visible()
    page.wait_for_load_state("load")  # deferred scripts have run
    assert page.evaluate("typeof window.htmx") == "object", "vendored htmx did not load"
    assert browser_problems.all() == []


def test_wrong_password_shows_an_error_and_stays_on_login(
    page: Page, live_server: str, owner: factories.Person, browser_problems: BrowserProblems
) -> None:
    from playwright.sync_api import expect

    sign_in(page, live_server, owner.email, password="not the password")

    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    expect(page).to_have_url(LOGIN)
    expect(page.get_by_label("Email")).to_have_value(owner.email)
    expect(page.get_by_label("Password")).to_have_value("")
    # The 401 status is reported as a failed resource load; nothing else may go wrong.
    assert [e for e in browser_problems.all() if "401" not in e] == []


def test_phone_sized_screen_has_a_menu_drawer(
    page: Page, live_server: str, owner: factories.Person, browser_problems: BrowserProblems
) -> None:
    from playwright.sync_api import expect

    page.set_viewport_size(PHONE)
    sign_in(page, live_server, owner.email)
    expect(page).to_have_url(HOME)

    settings = page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings")
    expect(settings).not_to_be_in_viewport()
    topbar = page.locator(".topbar").bounding_box()
    assert topbar is not None and topbar["height"] < 80
    menu = page.locator("label.nav-button")
    expect(menu).to_be_visible()
    menu.click()
    expect(settings).to_be_in_viewport()
    page.mouse.click(380, 400)  # the dimmed backdrop closes the drawer
    expect(settings).not_to_be_in_viewport()
    menu.click()
    expect(settings).to_be_visible()
    settings.click()
    expect(page).to_have_url(re.compile(r"/settings"))
    assert browser_problems.all() == []


def test_sign_out(
    page: Page, live_server: str, owner: factories.Person, browser_problems: BrowserProblems
) -> None:
    from playwright.sync_api import expect

    sign_in(page, live_server, owner.email)
    expect(page).to_have_url(HOME)

    page.locator("#sidebar").get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(LOGIN)
    expect(page.get_by_role("status")).to_contain_text("You are signed out.")

    page.goto(f"{live_server}/")
    expect(page).to_have_url(LOGIN)
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert browser_problems.all() == []
