"""The WebQR pairing page in a real browser: QR codes pushed live over the websocket."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from crm.whatsapp import webqr
from crm.whatsapp.accounts import create_account
from crm.whatsapp.gateway import Gateway
from tests import factories
from tests.e2e.conftest import BrowserProblems, sign_in
from tests.fakes.neonize_fake import FakeNeonize

pytestmark = pytest.mark.e2e


@pytest.fixture
def fake_gateway(app: Flask) -> Iterator[FakeNeonize]:
    fake = FakeNeonize()
    stop = threading.Event()
    thread = threading.Thread(target=Gateway(app, fake, poll_seconds=0.05).run, args=(stop,), daemon=True)
    thread.start()
    yield fake
    stop.set()
    thread.join(timeout=15)


def test_qr_codes_replace_each_other_then_connected_without_reload(
    page: Page,
    live_server: str,
    owner: factories.Person,
    fake_gateway: FakeNeonize,
    browser_problems: BrowserProblems,
) -> None:
    account = create_account(owner.workspace_id, provider="webqr", name="Celular da loja")
    account_id = account.id
    sign_in(page, live_server, owner.email)
    page.goto(f"{live_server}/settings/numbers/{account_id}")
    page.evaluate("window.__notReloaded = true")
    panel = page.locator(f"#webqr-{account_id}")
    expect(panel).to_contain_text("Not connected")
    page.get_by_role("button", name="Connect with a QR code").click()
    page.wait_for_url(re.compile(rf"/settings/numbers/{account_id}$"))
    page.evaluate("window.__notReloaded = true")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "on")  # the socket is live

    client = fake_gateway.wait_for_client(f"zapdesk-{account_id}")
    client.wait_connected()
    client.emit_qr_codes(["2@first-code"])
    expect(panel.locator("svg")).to_be_visible(timeout=10_000)
    expect(panel).to_contain_text("Waiting for scan")
    first_svg = panel.locator("svg").inner_html()
    expect(panel.locator(".countdown .seconds")).to_have_text(re.compile(r"^(5\d|60)$"))

    client.emit_qr_codes(["2@second-code"])
    page.wait_for_function(
        "(before) => { const s = document.querySelector('.qr-box svg');"
        " return s && s.innerHTML !== before; }",
        arg=first_svg,
        timeout=10_000,
    )

    client.pair("5511999990000")
    expect(panel).to_contain_text("Connected", timeout=10_000)
    expect(panel).to_contain_text("+5511999990000")
    expect(panel.locator("svg")).to_have_count(0)
    assert page.evaluate("window.__notReloaded") is True  # all of it arrived without a reload
    assert webqr.MAX_QR_CODES >= 2
    assert browser_problems.all() == []


def test_state_written_by_another_process_reaches_the_page(
    page: Page, live_server: str, owner: factories.Person
) -> None:
    """Embedded mode runs the gateway in a child process with no Redis: the page still learns
    about changes, from the session rows themselves."""
    from crm.extensions import db
    from crm.whatsapp.models import WebQRSession

    account = create_account(owner.workspace_id, provider="webqr", name="Outro celular")
    account_id = account.id
    webqr.request_connect(owner.workspace_id, account_id)
    sign_in(page, live_server, owner.email)
    page.goto(f"{live_server}/settings/numbers/{account_id}")
    page.wait_for_function("() => window.htmx")
    row = db.session.get(WebQRSession, account_id)
    assert row is not None
    row.state, row.state_detail = "banned", "code 101"  # as the gateway process would, with no event
    db.session.commit()
    expect(page.locator(f"#webqr-{account_id}")).to_contain_text("Temporarily banned", timeout=10_000)
