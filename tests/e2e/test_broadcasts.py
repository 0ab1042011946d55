"""Broadcasts in a real browser: an admin composes one to a tag and watches its progress page reach
"done" over the websocket, without reloading; another is paused, resumed and cancelled."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest

from crm.broadcasts.dispatch import dispatch
from crm.broadcasts.services import Draft, create_broadcast
from crm.extensions import db
from crm.realtime import fanout
from tests import factories
from tests.e2e.conftest import PHONE, BrowserProblems, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

BROADCAST_PAGE = re.compile(r"/broadcasts/(\d+)$")
CUSTOMERS = [
    ("+5511987650001", "Ana Beatriz Souza", "São Paulo"),
    ("+5511987650002", "Bruno Carvalho", "Campinas"),
    ("+5521987650003", "Camila Rocha", "Rio de Janeiro"),
    ("+5531987650004", "Diego Martins", "Belo Horizonte"),
    ("+5511987650005", "Eduarda Lima", "São Paulo"),
    ("+5541987650006", "Felipe Araújo", "Curitiba"),
]


def watching(workspace_id: int, broadcast_id: int, timeout: float = 10.0) -> None:
    """Wait until the page's websocket is registered for this broadcast (pushes before that are
    fetched by the page itself, but the test drives the ticks only once it listens)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with fanout._lock:
            tabs = list(fanout._tabs.get(workspace_id, ()))
        if any(tab.broadcast_id == broadcast_id for tab in tabs):
            return
        time.sleep(0.05)
    raise AssertionError("the progress page never opened its websocket")


def run_to_the_end(broadcast_id: int, timeout: float = 15.0) -> None:
    """Play the worker: a dispatcher tick a second until the broadcast is done (sends are inline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = dispatch(broadcast_id).status
        db.session.remove()
        if status == "done":
            return
        time.sleep(0.6)
    raise AssertionError("the broadcast did not finish")


def read_receipts(n: int) -> None:
    """The first ``n`` broadcast messages read on the customers' phones."""
    from sqlalchemy import select

    from crm.db import utcnow
    from crm.inbox.models import Message
    from crm.whatsapp.statuses import apply_status

    for message in db.session.scalars(
        select(Message).where(Message.author == "broadcast").order_by(Message.id).limit(n)
    ):
        assert message.provider_message_id is not None
        apply_status(message.workspace_id, message.account_id, message.provider_message_id, "read", utcnow())
    db.session.commit()


def test_compose_a_broadcast_to_a_tag_and_watch_it_finish_live(
    page: Page, live_server: str, owner: factories.Person, browser_problems: BrowserProblems
) -> None:
    from playwright.sync_api import expect

    factories.sandbox_account(owner, "Loja Centro")
    for phone, name, city in CUSTOMERS:
        factories.lead(
            owner, phone, name, opt_in=True, tags=("Clientes VIP",), custom_fields={"Cidade": city}
        )
    factories.lead(owner, "+5511987650099", "Sem Consentimento", tags=("Clientes VIP",))  # never opted in
    sign_in(page, live_server, owner.email)
    expect(page).to_have_title(re.compile("Inbox"))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Broadcasts").click()
    expect(page.get_by_text("No broadcasts yet.")).to_be_visible()
    page.get_by_role("link", name="New broadcast").first.click()

    page.get_by_label("Name", exact=True).fill("Black Friday VIP")
    text = page.get_by_label("Message text")
    text.fill("Oi ")
    page.get_by_role("button", name="{{first_name}}").click()  # inserted where the cursor is
    text.press("End")
    text.press_sequentially("! *Black Friday* em {{Cidade|sua cidade}}: 30% off hoje.", delay=5)
    page.get_by_role("button", name="+ Add a variant").click()
    page.get_by_label("Variant 2").fill("Olá {{first_name}}, a Black Friday chegou: 30% off só hoje!")
    page.get_by_label("With all these tags").fill("Clientes VIP")
    expect(page.locator("#audience-count")).to_have_text("Goes to 6 opted-in leads")
    preview = page.locator("#broadcast-preview")
    expect(preview.locator(".bubble")).to_contain_text("Oi Ana! Black Friday em São Paulo: 30% off hoje.")
    expect(preview.locator(".bubble strong")).to_have_text("Black Friday")
    expect(preview).to_contain_text("The first of 2 variants")
    page.get_by_label("Send from").fill("00:00")  # only one of the two: the service refuses it
    page.screenshot(path="test-artifacts/broadcast-compose.png", full_page=True, caret="initial")
    page.get_by_role("button", name="Send broadcast").click()
    expect(page.locator(".hours-field .field-error")).to_contain_text("Sending hours need a start and an end")
    page.screenshot(path="test-artifacts/broadcast-compose-error.png", full_page=True, caret="initial")
    expect(page.get_by_label("Message text")).to_have_value(re.compile(r"^Oi \{\{first_name\}\}!"))
    page.get_by_label("Send from").fill("")
    expect(page.locator("#audience-count")).to_have_text("Goes to 6 opted-in leads")
    page.get_by_role("button", name="Send broadcast").click()

    expect(page).to_have_url(BROADCAST_PAGE)
    match = BROADCAST_PAGE.search(page.url)
    assert match is not None
    broadcast_id = int(match.group(1))
    expect(page.locator(".flashes")).to_contain_text("Broadcast started: 6 recipients.")
    watching(owner.workspace_id, broadcast_id)
    run_to_the_end(broadcast_id)
    state = page.locator(f"#broadcast-state-{broadcast_id}")
    progress = page.locator(f"#broadcast-progress-{broadcast_id}")
    expect(state.locator(".broadcast-status")).to_have_text("Completed")  # pushed, not reloaded
    expect(progress).to_contain_text("6 of 6 sent")
    expect(progress.locator(f"#broadcast-{broadcast_id}-delivered dd")).to_have_text("6")
    expect(page.locator(".flashes")).to_be_visible()  # still the same page: nothing reloaded it
    expect(page.locator("#recipient-rows tr.recipient-row")).to_have_count(6)
    # Read receipts come in later: the counters show them (here after a reload; the page also
    # asks for them every minute for two days).
    read_receipts(3)
    page.reload()
    expect(progress.locator(f"#broadcast-{broadcast_id}-read dd")).to_have_text("3")
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.screenshot(path="test-artifacts/broadcast.png", caret="initial")

    page.get_by_label("Status", exact=True).select_option("read")
    expect(page).to_have_url(re.compile(r"status=read"))
    expect(page.locator("#recipient-rows tr.recipient-row")).to_have_count(3)
    page.set_viewport_size(PHONE)
    page.reload()
    expect(page.locator("#recipient-rows tr.recipient-row")).to_have_count(3)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "sideways scroll"
    page.screenshot(path="test-artifacts/broadcast-phone.png", full_page=True, caret="initial")
    # The refused form came back with 422, which the browser reports as a failed load. Nothing else
    # may go wrong.
    assert [e for e in browser_problems.all() if "status of 422" not in e] == []


def test_pause_resume_and_cancel_from_the_progress_page(
    page: Page, live_server: str, owner: factories.Person, browser_problems: BrowserProblems
) -> None:
    from playwright.sync_api import expect

    account = factories.sandbox_account(owner, "Loja Centro")
    for phone, name, _city in CUSTOMERS:
        factories.lead(owner, phone, name, opt_in=True, tags=("Clientes VIP",))
    # Sending hours that start two hours from now: it runs, and waits (nothing goes out meanwhile).
    local = datetime.now(ZoneInfo("America/Sao_Paulo"))
    opens, closes = (
        (local + timedelta(hours=2)).strftime("%H:00"),
        (local + timedelta(hours=3)).strftime("%H:00"),
    )
    broadcast = create_broadcast(
        owner.workspace_id,
        Draft(name="Reativação", variants=["Oi {{first_name}}"], tags=["clientes vip"], account_ids=[account],
              send_from=opens, send_until=closes),
    )  # fmt: skip
    sign_in(page, live_server, owner.email)
    expect(page).to_have_title(re.compile("Inbox"))
    page.goto(f"{live_server}/broadcasts/")
    row = page.locator(f"#broadcast-row-{broadcast.id}")
    expect(row).to_contain_text("0 of 6 sent")
    page.screenshot(path="test-artifacts/broadcasts.png", caret="initial")
    row.get_by_role("link", name="Reativação").click()
    state = page.locator(f"#broadcast-state-{broadcast.id}")
    progress = page.locator(f"#broadcast-progress-{broadcast.id}")
    expect(state.locator(".broadcast-status")).to_have_text("Sending")
    expect(progress).to_contain_text("Estimated finish")
    expect(progress).to_contain_text(f"It sends only from {opens} until {closes}")
    expect(progress).to_contain_text("Outside its sending hours: it goes on")

    state.get_by_role("button", name="Pause").click()
    expect(state.locator(".broadcast-status")).to_have_text("Paused")
    expect(state).to_contain_text("Resume continues with only the unsent recipients")
    expect(progress).to_contain_text("No estimate while it is paused.")
    page.screenshot(path="test-artifacts/broadcast-paused.png", full_page=True, caret="initial")
    state.get_by_role("button", name="Resume").click()
    expect(state.locator(".broadcast-status")).to_have_text("Sending")

    page.once("dialog", lambda dialog: dialog.accept())
    state.get_by_role("button", name="Cancel broadcast").click()
    expect(state.locator(".broadcast-status")).to_have_text("Cancelled")
    expect(progress.locator(f"#broadcast-{broadcast.id}-skipped dd")).to_have_text("6")
    expect(state.get_by_role("button")).to_have_count(0)  # nothing left to change
    page.reload()
    expect(page.locator("#recipient-rows")).to_contain_text("Broadcast cancelled")
    assert browser_problems.all() == []
