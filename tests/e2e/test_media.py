"""Files in the live inbox: a customer's photo appears in every open tab, an agent attaches a
document and a photo, mistakes are explained in the composer before or instead of sending."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from crm.extensions import db
from crm.inbox.models import Message
from tests import factories
from tests.e2e.conftest import SENDS, composer_ready, send_held
from tests.e2e.test_inbox import open_inbox
from tests.media import files

pytestmark = pytest.mark.e2e


def _image_loaded(page: Page, selector: str) -> None:
    page.wait_for_function(
        "(s) => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }",
        arg=selector,
        timeout=3_000,
    )


def test_photos_and_documents_in_the_live_inbox(
    browser: Browser, live_server: str, owner: factories.Person
) -> None:
    agent = factories.person("Acme", "agent@acme.example")
    account_id = factories.sandbox_account(owner)
    first = open_inbox(browser, live_server, owner.email)
    second = open_inbox(browser, live_server, agent.email)
    errors: list[str] = []
    # Not even a live fragment for something this tab doesn't show (another conversation's bubble).
    first.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    factories.inbound_file(account_id, files.jpeg(1200, 900), "entrega.jpg", caption="Chegou amassada",
                           phone="+5511988881111")  # fmt: skip
    for page in (first, second):
        expect(page.locator("#conversations")).to_contain_text("Chegou amassada", timeout=2_000)
        page.locator("#conversations [data-nav-item]").first.click()
        expect(page.locator(".thread .bubble.from-customer img")).to_have_count(1)
        _image_loaded(page, ".thread .bubble.from-customer img")

    composer = first.locator("form.composer")
    composer.locator("input[type=file]").set_input_files(
        files=[{"name": "Troca autorizada.pdf", "mimeType": "application/pdf", "buffer": files.pdf()}]
    )
    expect(composer.locator("[data-attachment-name]")).to_contain_text("Troca autorizada.pdf")
    first.locator("textarea[data-composer]").fill("Segue a autorização de troca")
    first.locator("textarea[data-composer]").press("Enter")
    sent = second.locator(".thread .bubble.from-business")
    expect(sent.locator("a.document")).to_contain_text("Troca autorizada.pdf", timeout=3_000)
    expect(sent).to_contain_text("Segue a autorização de troca")
    expect(sent.locator(".tick")).to_have_attribute("title", re.compile("^Delivered"))

    first.locator("form.composer input[type=file]").set_input_files(
        files=[{"name": "nova.jpg", "mimeType": "image/jpeg", "buffer": files.jpeg(2000, 1500)}]
    )
    first.locator("form.composer button[type=submit]").click()
    expect(second.locator(".thread .bubble.from-business img")).to_have_count(1, timeout=3_000)
    _image_loaded(second, ".thread .bubble.from-business img")
    first.wait_for_timeout(300)
    # Opening it cleared the unread badge in both lists; the open conversation stays highlighted
    # however often its list item is pushed anew.
    for page in (first, second):
        expect(page.locator("#conversations .unread-count")).to_have_count(0)
        expect(page.locator("#conversations li.conversation-item.selected")).to_have_count(1)
    first.screenshot(path="test-artifacts/inbox-media.png")
    assert not errors, errors
    for page in (first, second):
        page.context.close()


def test_mistakes_are_explained_in_the_composer(
    app: Flask, browser: Browser, live_server: str, owner: factories.Person
) -> None:
    saved = app.config["MAX_CONTENT_LENGTH"]
    account_id = factories.sandbox_account(owner)
    factories.inbound(account_id, phone="+5511977772222", text="Oi", name="Rui")
    page = open_inbox(browser, live_server, owner.email)
    page.locator("#conversations [data-nav-item]").first.click()
    composer = page.locator("form.composer")
    # Over the number's limit for photos: refused in the page, nothing is uploaded. (The page reads
    # the limit from the form; a small one here spares the test a 30 MB file.)
    composer.locator("input[type=file]").evaluate("(input) => input.setAttribute('data-limit-image', '1000')")
    photo = files.jpeg(200, 100)
    assert len(photo) > 1000
    composer.locator("input[type=file]").set_input_files(
        files=[{"name": "grande.jpg", "mimeType": "image/jpeg", "buffer": photo}]
    )
    expect(composer.locator("[data-attachment-error]")).to_contain_text("too large")
    expect(composer.locator("[data-attachment]")).to_be_hidden()
    # A file WhatsApp won't take: the server says why, and what was typed stays.
    composer.locator("input[type=file]").set_input_files(
        files=[{"name": "logo.png", "mimeType": "image/png", "buffer": files.svg_with_script()}]
    )
    page.locator("textarea[data-composer]").fill("Nosso logo")
    page.locator("form.composer button[type=submit]").click()
    expect(page.locator("form.composer .composer-error").first).to_contain_text("SVG", timeout=3_000)
    expect(page.locator("textarea[data-composer]")).to_have_value("Nosso logo")
    # Refused before the form is even read (over the server's request size): the message shows too.
    app.config["MAX_CONTENT_LENGTH"] = 50_000
    try:
        page.locator("form.composer input[type=file]").set_input_files(
            files=[
                {"name": "grande.pdf", "mimeType": "application/pdf", "buffer": files.pdf() + b"%" * 60_000}
            ]
        )
        page.locator("form.composer button[type=submit]").click()
        expect(page.locator("form.composer [data-attachment-error]")).to_contain_text(
            "too large", timeout=3_000
        )
    finally:
        app.config["MAX_CONTENT_LENGTH"] = saved
    expect(page.locator("form.composer")).to_have_count(1)
    expect(page.locator(".thread .bubble.from-business")).to_have_count(0)
    page.context.close()


def test_a_file_chosen_while_a_send_is_on_its_way_stays_chosen(
    browser: Browser, live_server: str, owner: factories.Person
) -> None:
    factories.inbound(factories.sandbox_account(owner), phone="+5511977773333", text="Oi", name="Lia")
    page = open_inbox(browser, live_server, owner.email)
    page.locator("#conversations [data-nav-item]").first.click()
    composer = page.locator("form.composer")
    text = composer_ready(page)
    route, answer, first_key = send_held(page, text, "Segue o boleto")
    composer.locator("input[type=file]").set_input_files(
        files=[{"name": "Boleto.pdf", "mimeType": "application/pdf", "buffer": files.pdf()}]
    )
    assert b"Boleto.pdf" not in (route.request.post_data_buffer or b"")  # chosen after the send left
    route.fulfill(response=answer)  # a fresh composer
    page.unroute(SENDS)
    expect(page.locator("input[name=send_key]")).not_to_have_value(first_key)
    expect(composer.locator("[data-attachment]")).to_be_visible()
    expect(composer.locator("[data-attachment-name]")).to_contain_text("Boleto.pdf")
    composer.locator("button[type=submit]").click()  # the file alone: no text needed
    bubbles = page.locator(".thread .bubble.from-business")
    expect(bubbles).to_have_count(2)
    expect(bubbles.last.locator("a.document")).to_contain_text("Boleto.pdf")
    expect(composer.locator("[data-attachment]")).to_be_hidden()  # the file that went is not kept
    sent = db.session.execute(
        select(Message.type, Message.text).where(Message.direction == "out").order_by(Message.id)
    )
    assert [tuple(row) for row in sent] == [("text", "Segue o boleto"), ("document", "")]
    page.context.close()
