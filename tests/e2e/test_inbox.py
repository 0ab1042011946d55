"""The live inbox with two agents in two browsers."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Route, ViewportSize, expect
from sqlalchemy import select

from crm.extensions import db
from crm.inbox.models import Conversation
from crm.leads.consent import ConsentChange
from crm.leads.models import ConsentSource, Lead
from crm.leads.services import LeadChanges, update_lead
from crm.whatsapp import simulator
from tests import factories
from tests.e2e.conftest import (
    DESKTOP,
    PHONE,
    SENDS,
    composer_ready,
    hold_answers,
    send_held,
    sign_in,
    wait_for_held,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def close_contexts(browser: Browser) -> Iterator[None]:
    """The tabs a test opened are closed after it even when it fails: an open page keeps its
    socket and its polling going while the next tests run."""
    yield
    for context in browser.contexts:
        context.close()


def open_inbox(browser: Browser, live_server: str, email: str, viewport: ViewportSize = DESKTOP) -> Page:
    context = browser.new_context(locale="en-US", viewport=viewport)
    page = context.new_page()
    sign_in(page, live_server, email)
    expect(page).to_have_title(re.compile("Inbox"))
    # The server's first frame on the socket: from then on, nothing published is missed.
    expect(page.locator("#live-state")).to_have_attribute("data-state", "on")
    return page


def test_two_agents_see_messages_and_replies_live(
    browser: Browser, live_server: str, owner: factories.Person, tmp_path: object
) -> None:
    agent = factories.person("Acme", "agent@acme.example")
    account_id = factories.sandbox_account(owner)
    first = open_inbox(browser, live_server, owner.email)
    second = open_inbox(browser, live_server, agent.email)
    # The sandbox's phone: the owner's simulator page, where a customer writes and sees replies.
    phone = first.context.new_page()
    phone.goto(f"{live_server}/settings/numbers/{account_id}/simulator")
    phone.get_by_label("Customer phone").fill("+55 11 98888-1111")
    phone.get_by_label("Customer name").fill("Marina")
    phone.get_by_label("Message").fill("Oi! Vocês entregam hoje?")

    with phone.expect_response(lambda r: r.request.method == "POST"):
        phone.get_by_role("button", name="Send as customer").click()
    sent_at = time.monotonic()  # stored and published by the time the phone's page has its answer
    for page in (first, second):  # both within 1 s of it, without a reload
        left_ms = max(1.0, 1_000 - (time.monotonic() - sent_at) * 1000)
        expect(page.locator("#conversations")).to_contain_text("Vocês entregam hoje?", timeout=left_ms)
    for page in (first, second):
        expect(page.locator("#conversations")).to_contain_text("Marina")
        expect(page.locator("#conversations-empty")).to_have_count(0)

    first.get_by_text("Marina").click()
    expect(first.locator(".thread .messages")).to_contain_text("Oi! Vocês entregam hoje?")
    second.get_by_text("Marina").click()
    expect(second.locator(".thread .messages")).to_contain_text("Oi! Vocês entregam hoje?")

    composer = first.locator("textarea[data-composer]")
    composer.fill("Entregamos sim,")
    composer.press("Shift+Enter")  # a new line, not a send
    composer.press_sequentially("até as 18h!")
    expect(composer).to_have_value("Entregamos sim,\naté as 18h!")
    composer.press("Enter")
    reply = second.locator(".thread .messages .bubble.from-business")
    expect(reply).to_contain_text("Entregamos sim,", timeout=2_000)
    assert "Entregamos sim,\naté as 18h!" in reply.inner_text()  # its two lines
    expect(reply.locator(".tick")).to_have_attribute("title", re.compile("^Delivered"))
    first.locator("textarea[data-composer]").fill("Qual o endereço?")
    first.locator(".composer button[type=submit]").dblclick()  # a double click sends once
    for page in (first, second):
        bubbles = page.locator(".thread .messages .bubble.from-business")
        expect(bubbles.last).to_contain_text("Qual o endereço?")
        expect(bubbles).to_have_count(2)
    first.screenshot(path="test-artifacts/inbox.png")

    phone.goto(f"{live_server}/settings/numbers/{account_id}/simulator?phone=%2B5511988881111")
    on_phone = phone.locator("#simulator-thread .bubble.from-business")
    expect(on_phone).to_have_count(2)
    expect(on_phone.first).to_contain_text("Entregamos sim,")
    expect(on_phone.first).to_contain_text("Delivered")
    expect(on_phone.last).to_contain_text("Qual o endereço?")


def test_keyboard_moves_between_conversations(
    browser: Browser, live_server: str, owner: factories.Person
) -> None:
    account_id = factories.sandbox_account(owner)
    for phone, name in (("+5511911110001", "Ana"), ("+5511911110002", "Bia")):
        simulator.customer_writes(owner.workspace_id, account_id, phone, f"Oi, aqui é {name}", name=name)
    page = open_inbox(browser, live_server, owner.email)
    header = page.locator(".thread-header h2")
    page.keyboard.press("j")  # the newest first
    expect(header).to_contain_text("Bia")
    # Opening it marks it read, and the list's item comes again over the socket: until that
    # settles, the new item lacks the highlight. A j meanwhile still moves on from it.
    page.evaluate(
        "document.querySelectorAll('#conversations .selected').forEach(li => li.classList.remove('selected'))"
    )
    page.keyboard.press("j")
    expect(header).to_contain_text("Ana")
    expect(page.locator("#conversations .selected")).to_have_count(1)  # and only it
    expect(page.locator("#conversations .selected")).to_contain_text("Ana")
    page.keyboard.press("j")  # the last one stays
    expect(header).to_contain_text("Ana")
    page.keyboard.press("k")
    expect(header).to_contain_text("Bia")
    page.locator("textarea[data-composer]").focus()
    page.keyboard.press("j")  # typed in the composer, not a move
    expect(page.locator("textarea[data-composer]")).to_have_value("j")
    expect(header).to_contain_text("Bia")


def test_a_failed_send_shows_why_live(browser: Browser, live_server: str, owner: factories.Person) -> None:
    from crm.db import utcnow
    from crm.whatsapp.statuses import apply_status

    account_id = factories.sandbox_account(owner)
    simulator.customer_writes(owner.workspace_id, account_id, "+5511922223333", "Oi", name="Caio")
    conversation_id = db.session.scalar(select(Conversation.id))
    assert conversation_id is not None
    factories.stored_message(
        conversation_id, "Seu pedido saiu", direction="out", provider_message_id="wamid.failing"
    )
    page = open_inbox(browser, live_server, owner.email)
    page.get_by_text("Caio").click()
    tick = page.locator(".thread .messages .bubble.from-business .tick")
    expect(tick).to_have_attribute("title", re.compile("^Sent"))
    assert apply_status(
        owner.workspace_id, account_id, "wamid.failing", "failed", utcnow(), "131026", "Message undeliverable"
    )
    db.session.commit()
    expect(tick).to_have_attribute("title", re.compile("^Failed.*Message undeliverable"), timeout=2_000)
    expect(tick).to_have_text("!")


def drop_sockets(workspace_id: int) -> None:
    """What a dropped connection does to the workspace's open tabs: the server's end of each
    socket goes away without a close frame (the browser sees 1006 and reconnects)."""
    from crm.realtime import fanout

    with fanout._lock:
        tabs = list(fanout._tabs.get(workspace_id, ()))
    assert tabs
    for tab in tabs:
        tab.ws.sock.shutdown(socket.SHUT_RDWR)


def test_a_page_that_reconnects_fetches_what_it_missed(
    browser: Browser, live_server: str, owner: factories.Person
) -> None:
    account_id = factories.sandbox_account(owner)
    page = open_inbox(browser, live_server, owner.email)
    page.evaluate("window.__notReloaded = true")
    # The socket comes back 3 s after it dropped (not at once, as it may): time to miss an event.
    page.evaluate("htmx.config.wsReconnectDelay = function () { return 3000; }")
    state = page.locator("#live-state")
    banner = page.get_by_text("Connection lost. Reconnecting…")
    expect(banner).to_be_hidden()
    drop_sockets(owner.workspace_id)
    expect(state).to_have_attribute("data-state", "off")
    expect(banner).to_be_visible()  # the page knows its socket dropped, and says so
    expect(page.get_by_text("Live updates stopped.")).to_be_hidden()
    # Sent while the page's websocket is down: this event never reaches it.
    simulator.customer_writes(
        owner.workspace_id, account_id, "+55 11 97777-2222", "Mensagem perdida?", name="Rui"
    )
    page.wait_for_timeout(300)
    expect(page.locator("#conversations")).not_to_contain_text("Rui")
    page.screenshot(path="test-artifacts/inbox-reconnecting.png")
    # Back: the page fetches its list again, and shows itself live once more.
    expect(page.locator("#conversations")).to_contain_text("Mensagem perdida?", timeout=15_000)
    expect(banner).to_be_hidden()
    expect(state).to_have_attribute("data-state", "on")
    assert page.evaluate("window.__notReloaded") is True


def test_a_page_told_that_events_were_lost_fetches_them_without_reloading(
    browser: Browser, live_server: str, owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis went away and came back while the page's socket stayed open (crm/realtime/broker.py):
    the events published meanwhile never came, and the page is told to fetch what it shows,
    keeping its search and the reply being typed."""
    from crm.realtime import broker

    account_id = factories.sandbox_account(owner)
    for phone, text, name in [("95555-4444", "Bom dia", "Ana Souza"), ("97777-1111", "Oi", "Beto")]:
        simulator.customer_writes(owner.workspace_id, account_id, f"+55 11 {phone}", text, name=name)
    page = open_inbox(browser, live_server, owner.email)
    page.evaluate("window.__notReloaded = true")
    page.get_by_text("Ana Souza").click()
    expect(page.locator(".thread .messages")).to_contain_text("Bom dia")
    page.locator("#inbox-q").fill("Souza")
    expect(page.locator("#conversations")).not_to_contain_text("Beto")
    page.locator("textarea[data-composer]").fill("Um rascunho")
    with monkeypatch.context() as patch:  # published, and lost on the way
        patch.setattr(broker, "publish", lambda workspace_id, event: None)
        for phone, text, name in [
            ("95555-4444", "Ainda aí?", "Ana Souza"),
            ("96666-3333", "Olá, sou a Lia Souza", "Lia Souza"),
            ("97777-1111", "Alô?", "Beto"),
        ]:
            simulator.customer_writes(owner.workspace_id, account_id, f"+55 11 {phone}", text, name=name)
    page.wait_for_timeout(500)
    expect(page.locator("#conversations")).not_to_contain_text("Lia")
    expect(page.locator(".thread .messages")).not_to_contain_text("Ainda aí?")
    broker.resync_local()  # what the relay does once subscribed again
    expect(page.locator("#conversations")).to_contain_text("Olá, sou a Lia Souza")
    expect(page.locator(".thread .messages")).to_contain_text("Ainda aí?")
    expect(page.locator(".thread .messages .bubble")).to_have_count(2)
    expect(page.locator("#conversations")).not_to_contain_text("Beto")  # the search still applies
    expect(page.locator("#inbox-q")).to_have_value("Souza")
    expect(page.locator("textarea[data-composer]")).to_have_value("Um rascunho")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "on")
    assert page.evaluate("window.__notReloaded") is True


def caios_conversation(owner: factories.Person, messages: int) -> tuple[int, int]:
    """A conversation of ``messages`` messages, "m0" the oldest; (number, conversation)."""
    account_id = factories.sandbox_account(owner)
    conversation_id = factories.inbound(account_id, "+5511944443333", "m0", "Caio")
    for n in range(1, messages):
        factories.stored_message(conversation_id, f"m{n}")
    return account_id, conversation_id


def test_older_messages_load_as_the_reader_scrolls_up_the_thread_keeping_the_place_read(
    browser: Browser, live_server: str, owner: factories.Person
) -> None:
    caios_conversation(owner, 120)
    page = open_inbox(browser, live_server, owner.email)
    page.get_by_text("Caio").click()
    bubbles = page.locator(".thread .messages .bubble")
    expect(bubbles.last).to_contain_text("m119")
    page.wait_for_timeout(500)
    expect(bubbles).to_have_count(50)  # the newest page only, until the reader scrolls up
    read = page.get_by_text("m72", exact=True)
    where = "e => e.getBoundingClientRect().top - e.closest('.messages').getBoundingClientRect().top"
    page.locator(".thread .messages").evaluate("box => { box.scrollTop = 100; }")  # near the top
    before = read.evaluate(where)
    expect(bubbles).to_have_count(100)
    assert abs(read.evaluate(where) - before) < 40  # the page came in above what was being read
    page.locator(".thread .messages").hover()
    for _ in range(60):  # the thread's own scrolling, as a reader's wheel does it
        if bubbles.count() == 120:
            break
        page.mouse.wheel(0, -1500)
        page.wait_for_timeout(100)
    expect(bubbles).to_have_count(120)
    expect(bubbles.first).to_contain_text("m0")  # oldest first, in order
    expect(page.locator(".thread .older")).to_have_count(0)


def test_older_messages_that_failed_to_load_are_asked_for_again(
    browser: Browser, live_server: str, owner: factories.Person
) -> None:
    caios_conversation(owner, 60)
    page = open_inbox(browser, live_server, owner.email)
    failed: list[str] = []

    def once_down(route: Route) -> None:
        if failed:
            route.continue_()
        else:
            failed.append(route.request.url)
            route.fulfill(status=503, body="")

    page.route("**/older?*", once_down)
    page.get_by_text("Caio").click()
    bubbles = page.locator(".thread .messages .bubble")
    expect(bubbles).to_have_count(50)
    box = page.locator(".thread .messages")
    box.evaluate("box => { box.scrollTop = 100; }")
    page.wait_for_timeout(500)
    assert failed and bubbles.count() == 50
    for _ in range(30):  # the reader scrolls on: asked again a moment later
        if bubbles.count() == 60:
            break
        box.evaluate("box => { box.scrollTop = box.scrollTop === 0 ? 1 : 0; }")
        page.wait_for_timeout(200)
    expect(bubbles).to_have_count(60)


def test_a_refetched_thread_keeps_the_older_pages_read_unless_more_was_missed_than_a_page(
    browser: Browser, live_server: str, owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm.realtime import broker

    account_id, _conversation = caios_conversation(owner, 60)
    page = open_inbox(browser, live_server, owner.email)
    page.get_by_text("Caio").click()
    bubbles = page.locator(".thread .messages .bubble")
    expect(bubbles).to_have_count(50)
    page.locator(".thread .messages").evaluate("box => { box.scrollTop = 0; }")  # the older page loads
    expect(bubbles).to_have_count(60)

    def lost(texts: list[str]) -> None:
        with monkeypatch.context() as patch:
            patch.setattr(broker, "publish", lambda workspace_id, event: None)
            for text in texts:
                simulator.customer_writes(owner.workspace_id, account_id, "+5511944443333", text, name="Caio")

    from crm.inbox.models import Message
    from crm.inbox.services import delete_message

    deleted = db.session.scalar(select(Message.id).where(Message.text == "m58"))
    assert deleted is not None
    with monkeypatch.context() as patch:  # deleted by another agent, its event lost too
        patch.setattr(broker, "publish", lambda workspace_id, event: None)
        delete_message(owner.workspace_id, deleted)
    lost(["novo 1", "novo 2", "novo 3"])
    broker.resync_local()
    expect(bubbles.last).to_contain_text("novo 3")
    expect(bubbles).to_have_count(62)  # the older page read stays, the missed ones follow
    expect(bubbles.first).to_contain_text("m0")
    expect(page.locator(f"#message-{deleted}")).to_have_count(0)
    lost(["perdida"])  # missed, then one that arrives live before the page refetches
    simulator.customer_writes(owner.workspace_id, account_id, "+5511944443333", "ao vivo", name="Caio")
    expect(bubbles.last).to_contain_text("ao vivo")
    broker.resync_local()
    expect(bubbles).to_have_count(64)
    expect(bubbles.nth(62)).to_contain_text("perdida")  # in its place, before the later one
    expect(bubbles.last).to_contain_text("ao vivo")
    lost([f"muitos {n}" for n in range(55)])
    broker.resync_local()
    expect(bubbles.last).to_contain_text("muitos 54")
    expect(bubbles).to_have_count(50)  # a gap: the newest page, and older ones as it scrolls up
    expect(page.locator(".thread .older")).to_have_count(1)


def test_a_page_whose_session_ended_says_live_updates_stopped(
    browser: Browser, live_server: str, owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm.auth.models import UserSession
    from crm.auth.services import revoke_sessions_where
    from crm.realtime import ws

    monkeypatch.setattr(ws, "RECHECK_SECONDS", 0.3)  # instead of every 30 s
    page = open_inbox(browser, live_server, owner.email)
    revoke_sessions_where(UserSession.user_id == owner.user_id, reason="logout")
    # Closed by the server for good: no reconnecting to promise, a reload (to sign in) instead.
    expect(page.locator("#live-state")).to_have_attribute("data-state", "closed", timeout=5_000)
    expect(page.get_by_text("Live updates stopped.")).to_be_visible()
    expect(page.get_by_text("Connection lost. Reconnecting…")).to_be_hidden()
    expect(page.get_by_role("link", name="Reload the page")).to_have_attribute("href", "")
    # The socket tries again meanwhile and is refused: the page stays as it was, saying so.
    page.wait_for_timeout(1_500)
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_text("Live updates stopped.")).to_be_visible()
    # Whatever the tab asks for next loads the sign-in page as the page, not into the list.
    page.locator("form.inbox-filters select[name=status]").select_option("closed")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()


def test_agents_see_who_else_has_the_conversation_open(
    browser: Browser, live_server: str, owner: factories.Person
) -> None:
    agent = factories.person("Acme", "agent@acme.example")
    account_id = factories.sandbox_account(owner)
    simulator.customer_writes(owner.workspace_id, account_id, "+55 11 96666-3333", "Alguém aí?", name="Bia")
    first = open_inbox(browser, live_server, owner.email)
    second = open_inbox(browser, live_server, agent.email)
    first.get_by_text("Bia").click()
    viewers = first.locator(".thread .viewers")
    expect(viewers).to_be_empty()  # nobody else yet
    second.get_by_text("Bia").click()
    expect(viewers).to_contain_text("agent@acme.example is also viewing this conversation", timeout=2_000)
    expect(second.locator(".thread .viewers")).to_contain_text(owner.email)
    tag_input = second.locator(".tag-add input")
    tag_input.fill("Atacado")
    tag_input.press("Enter")
    expect(first.locator(".thread-header .tags")).to_contain_text("Atacado", timeout=2_000)  # live, both tabs
    first.screenshot(path="test-artifacts/inbox-presence.png")
    second.context.close()  # the other agent goes away: their socket closes
    expect(viewers).to_be_empty(timeout=3_000)


def test_a_saved_reply_is_inserted_by_its_shortcut(
    browser: Browser, live_server: str, owner: factories.Person
) -> None:
    account_id = factories.sandbox_account(owner)
    factories.canned_reply(owner, "hours", "Oi {{name}}! Abrimos das 9h às 18h.")
    simulator.customer_writes(
        owner.workspace_id, account_id, "+55 11 95555-4444", "Que horas abrem?", name="Caio Lima"
    )
    page = open_inbox(browser, live_server, owner.email)
    page.get_by_text("Caio Lima").click()
    composer = composer_ready(page)
    composer.press_sequentially("/ho")
    choice = page.locator(".canned-suggestions [data-canned-text]")
    expect(choice).to_contain_text("/hours")
    composer.press("Enter")  # picks the first suggestion instead of sending "/ho"
    expect(composer).to_have_value("Oi Caio! Abrimos das 9h às 18h.")
    expect(choice).to_have_count(0)
    page.locator(".emoji-picker summary").click()
    page.locator(".emoji-grid [data-emoji='🙏']").click()  # lands where the cursor is: the end
    expect(composer).to_have_value("Oi Caio! Abrimos das 9h às 18h.🙏")
    expect(page.locator(".emoji-grid")).to_be_hidden()
    composer.press("Enter")
    expect(page.locator(".thread .messages .bubble.from-business")).to_contain_text(
        "Abrimos das 9h às 18h.🙏"
    )
    page.screenshot(path="test-artifacts/inbox-saved-reply.png")


def test_live_conversations_respect_the_lists_filters(
    browser: Browser, live_server: str, owner: factories.Person
) -> None:
    shop = factories.sandbox_account(owner, name="Loja")
    support = factories.sandbox_account(owner, name="Suporte")
    page = open_inbox(browser, live_server, owner.email)
    # The filter's answer replaces the list: wait for that before the customers write, or the
    # replacement could land after their live rows and drop them.
    page.evaluate("document.querySelector('#conversations').dataset.before = 'filter'")
    page.select_option("#inbox-account", str(shop))
    expect(page.locator("#conversations[data-before]")).to_have_count(0)
    expect(page.locator("#conversations-empty")).to_be_visible()
    simulator.customer_writes(owner.workspace_id, support, "+55 11 94444-1111", "Suporte?", name="Davi")
    simulator.customer_writes(owner.workspace_id, shop, "+55 11 94444-2222", "Loja?", name="Eva")
    expect(page.locator("#conversations")).to_contain_text("Eva", timeout=2_000)
    other_number = page.locator("#conversations li.conversation-item", has_text="Davi")
    expect(other_number).to_have_count(1)  # it arrived over the websocket…
    expect(other_number).to_be_hidden()  # …and the filter keeps it out of sight


def test_the_list_is_asked_for_once_per_change_of_its_filters(
    browser: Browser, live_server: str, owner: factories.Person
) -> None:
    """Leaving the search box after typing asks for nothing more: its typing already did."""
    shop = factories.sandbox_account(owner)
    for phone, name in (("+55 11 95555-0001", "Ana"), ("+55 11 95555-0002", "Bia")):
        simulator.customer_writes(owner.workspace_id, shop, phone, "Oi", name=name)
    page = open_inbox(browser, live_server, owner.email)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "view=" in request.url else None)
    shown = page.locator("#conversations li.conversation-item:visible")
    page.fill("#inbox-q", "Ana")
    expect(shown).to_have_text([re.compile("Ana")])
    page.get_by_text("Ana").click()  # the search box loses the focus
    expect(page.locator(".thread .messages")).to_contain_text("Oi")
    page.fill("#inbox-tag", "vip")
    expect(page.locator("#conversations-empty")).to_be_visible()
    page.locator("textarea[data-composer]").focus()
    page.select_option("#inbox-status", "closed")
    page.wait_for_timeout(500)  # time for a request too many to go
    assert [re.findall(r"(q|tag|status)=(\w*)", url) for url in asked] == [
        [("q", "Ana"), ("status", "open"), ("tag", "")],
        [("q", "Ana"), ("status", "open"), ("tag", "vip")],
        [("q", "Ana"), ("status", "closed"), ("tag", "vip")],
    ]


def test_a_conversation_that_writes_during_a_search_shows_only_if_the_search_finds_it(
    browser: Browser, live_server: str, owner: factories.Person
) -> None:
    shop = factories.sandbox_account(owner)
    simulator.customer_writes(owner.workspace_id, shop, "+55 11 93333-1111", "Quero um orçamento", name="Bia")
    simulator.customer_writes(owner.workspace_id, shop, "+55 11 93333-2222", "Oi", name="Caio")
    page = open_inbox(browser, live_server, owner.email)
    shown = page.locator("#conversations li.conversation-item:visible")
    expect(shown).to_have_count(2)
    page.get_by_text("Bia").click()  # her conversation open: it stays highlighted in new lists
    expect(page.locator(".thread .messages")).to_contain_text("Quero um orçamento")
    page.fill("#inbox-q", "orçamento")
    expect(shown).to_have_text([re.compile("Bia")])
    # Whenever the page is between two tasks, record whether Caio's item shows.
    page.evaluate(
        """() => { window.__caioShown = false; new MutationObserver(() => {
          document.querySelectorAll('#conversations li.conversation-item').forEach((li) => {
            if (!li.hidden && li.textContent.includes('Caio')) window.__caioShown = true; });
        }).observe(document.body, { subtree: true, childList: true, attributes: true }); }"""
    )
    # Caio writes again (the search doesn't find him), then Duda asks for a quote (it does).
    simulator.customer_writes(owner.workspace_id, shop, "+55 11 93333-2222", "Bom dia", name="Caio")
    simulator.customer_writes(owner.workspace_id, shop, "+55 11 93333-3333", "Orçamento hoje?", name="Duda")
    expect(shown).to_have_text([re.compile("Duda"), re.compile("Bia")])
    page.wait_for_timeout(500)  # the search asked again after each of them has answered
    expect(shown).to_have_text([re.compile("Duda"), re.compile("Bia")])
    assert page.evaluate("window.__caioShown") is False  # not even for a moment
    expect(page.locator("#conversations li.conversation-item.selected")).to_have_text(re.compile("Bia"))
    page.fill("#inbox-q", "")
    expect(shown).to_have_text([re.compile("Duda"), re.compile("Caio"), re.compile("Bia")])


def test_conversations_pushed_while_the_filtered_list_loads_stay_in_it(
    browser: Browser, live_server: str, owner: factories.Person
) -> None:
    shop = factories.sandbox_account(owner, name="Loja")
    factories.sandbox_account(owner, name="Suporte")  # with two numbers, the list filters by number
    ana = simulator.customer_writes(owner.workspace_id, shop, "+55 11 94444-1111", "Oi", name="Ana")
    simulator.customer_writes(owner.workspace_id, shop, "+55 11 94444-2222", "Olá", name="Bia")
    page = open_inbox(browser, live_server, owner.email)
    held = hold_answers(page, re.compile(rf".*[?&]account={shop}(&|$)"))
    page.select_option("#inbox-account", str(shop))
    route, answer = wait_for_held(page, held)
    simulator.customer_writes(owner.workspace_id, shop, "+55 11 94444-3333", "Ainda abertos?", name="Fábio")
    ana_id = db.session.scalar(
        select(Lead.id).where(Lead.workspace_id == owner.workspace_id, Lead.phone == ana)
    )
    update_lead(owner.workspace_id, ana_id, LeadChanges(name="Ana Paula"), ConsentChange(ConsentSource.FORM))
    items = page.locator("#conversations li.conversation-item")
    expect(items).to_have_count(3)
    expect(items.first).to_contain_text("Fábio")  # live, in the list still showing
    expect(page.locator("#conversations")).to_contain_text("Ana Paula")
    route.fulfill(response=answer)  # the filtered list, from before Fábio wrote and Ana was renamed
    expect(page.locator("#conversations[data-me]")).to_have_count(1)
    # Fábio's new message on top; Ana renamed where the list has her, not moved up.
    expect(items).to_have_text([re.compile("Fábio"), re.compile("Bia"), re.compile("Ana Paula")])


def test_what_is_typed_while_a_send_is_on_its_way_stays_in_the_composer(
    browser: Browser, live_server: str, owner: factories.Person
) -> None:
    from crm.inbox.models import Message

    account_id = factories.sandbox_account(owner)
    simulator.customer_writes(owner.workspace_id, account_id, "+5511933334444", "Oi", name="Dora")
    page = open_inbox(browser, live_server, owner.email)
    page.get_by_text("Dora").click()
    composer = composer_ready(page)
    route, answer, first_key = send_held(page, composer, "Bom dia!")
    composer.press_sequentially("Em que posso ajudar?")  # typed on, before the send is answered
    for _ in "ajudar?":
        composer.press("ArrowLeft")  # the caret before "ajudar?"
    assert "Bom dia!" in (route.request.post_data or "")
    assert "Em que" not in (route.request.post_data or "")
    route.fulfill(response=answer)  # a fresh composer, with a new key
    expect(page.locator("input[name=send_key]")).not_to_have_value(first_key)
    expect(composer).to_have_value("Em que posso ajudar?")  # not what went
    expect(composer).to_be_focused()
    page.unroute(SENDS)
    page.keyboard.type("te ")  # where the caret was
    composer.press("Enter")
    bubbles = page.locator(".thread .messages .bubble.from-business")
    expect(bubbles).to_have_count(2)
    expect(bubbles.last).to_contain_text("Em que posso te ajudar?")
    expect(composer).to_have_value("")
    sent = db.session.scalars(select(Message.text).where(Message.direction == "out").order_by(Message.id))
    assert list(sent) == ["Bom dia!", "Em que posso te ajudar?"]
    # A saved reply's "/shortcut" typed meanwhile keeps its list, and Enter picks it.
    factories.canned_reply(owner, "hours", "Oi {{name}}! Abrimos das 9h às 18h.")
    route, answer, _ = send_held(page, composer, "Até já")
    composer.fill("/ho")
    choice = page.locator(".canned-suggestions [data-canned-text]")
    expect(choice).to_contain_text("/hours")
    route.fulfill(response=answer)
    expect(page.locator("input[name=send_key]")).to_have_count(1)
    expect(composer).to_have_value("/ho")
    expect(choice).to_contain_text("/hours")
    composer.press("Enter")
    expect(composer).to_have_value("Oi Dora! Abrimos das 9h às 18h.")
    expect(page).to_have_title(re.compile("Inbox"))  # every send through htmx: the page stayed


def test_a_reply_typed_after_the_window_closed_turns_into_the_templates(
    browser: Browser, live_server: str, owner: factories.Person
) -> None:
    from datetime import timedelta

    from crm.db import utcnow
    from crm.inbox.models import Message

    conversation_id = factories.inbound(factories.cloud_account(owner), name="Ana", text="Oi")
    page = open_inbox(browser, live_server, owner.email)
    page.get_by_text("Ana", exact=True).click()
    composer = page.locator("textarea[data-composer]")
    expect(composer).to_be_visible()
    message = db.session.scalar(select(Message).where(Message.conversation_id == conversation_id))
    assert message is not None
    message.created_at = utcnow() - timedelta(hours=25)  # the tab stays open past the 24 hours
    db.session.commit()
    composer.fill("Ainda está aí?")
    composer.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("only accepts an approved template")
    expect(page.locator(f"#template-composer-{conversation_id}")).to_be_visible()
    expect(composer).to_have_count(0)
    assert db.session.scalar(select(Message).where(Message.direction == "out")) is None


def test_the_inbox_on_a_phone_sized_screen(
    browser: Browser, live_server: str, owner: factories.Person
) -> None:
    account_id = factories.sandbox_account(owner)
    simulator.customer_writes(owner.workspace_id, account_id, "+5511933334444", "Bom dia!", name="Davi")
    page = open_inbox(browser, live_server, owner.email, viewport=PHONE)
    listing = page.locator(".conversation-list")
    thread = page.locator("#thread")
    expect(listing).to_be_visible()
    expect(thread).to_be_hidden()  # one pane at a time: the list first
    page.get_by_text("Davi", exact=True).click()
    expect(thread).to_contain_text("Bom dia!")
    expect(listing).to_be_hidden()
    composer = page.locator("textarea[data-composer]")
    expect(composer).to_be_in_viewport()
    composer.fill("Bom dia, Davi! Em que posso ajudar?")
    composer.press("Enter")
    expect(thread.locator(".bubble.from-business")).to_contain_text("Em que posso ajudar?")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # nothing sideways
    page.screenshot(path="test-artifacts/inbox-phone.png")
    page.get_by_role("link", name="Back to the list").click()
    expect(listing).to_be_visible()
    expect(listing).to_contain_text("Em que posso ajudar?")
