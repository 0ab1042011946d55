"""AI replies in a real browser: the settings page (status, warnings, the key, the hours shown
only for "outside business hours"), and a thread with an AI answer, a fallback and a hand-off:
badges, the bot switch, "suggest reply" filling the composer through the Gemini stub, and the
hand-off notice pushed over the websocket. Screenshots on a desktop and a phone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask import Flask
from huey import Huey
from playwright.sync_api import Page, expect

from crm.ai.models import AISettings
from crm.ai.settings import update_settings
from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import ConversationNote
from crm.realtime import broker
from tests import factories
from tests.e2e.conftest import (
    DESKTOP,
    PHONE,
    BrowserProblems,
    composer_ready,
    hold_answers,
    sign_in,
    wait_for_held,
)
from tests.fakes.gemini import GeminiStub, Outcome

pytestmark = pytest.mark.e2e

KNOWLEDGE = """Barbearia Central — Rua Augusta, 1200, São Paulo.
Horário: segunda a sexta, 9h às 19h; sábado, 9h às 13h.
Corte: R$ 50. Barba: R$ 35. Corte + barba: R$ 75.
Pagamento: Pix, cartão de crédito e débito.
Agendamentos pelo WhatsApp ou em https://barbeariacentral.example/agenda"""


@pytest.fixture
def gemini(app: Flask) -> Iterator[GeminiStub]:
    """The Gemini stub, with no key on the server (the workspace's own key is typed in the page)."""
    names = ("GEMINI_API_KEY", "GEMINI_BASE_URL", "AI_TIMEOUT_SECONDS")
    saved = {name: app.config.get(name) for name in names}
    with GeminiStub() as stub:
        app.config.update(GEMINI_API_KEY=None, GEMINI_BASE_URL=stub.url, AI_TIMEOUT_SECONDS=5.0)
        try:
            yield stub
        finally:
            app.config.update(saved)


def _a_morning_with_the_bot(owner: factories.Person) -> int:
    """A customer's conversation the bot answered, fell back in, then handed to the team."""
    shop = factories.sandbox_account(owner, name="Loja")
    factories.sandbox_account(owner, name="Suporte")
    conversation_id = factories.inbound(shop, "+5511988881111", "Vocês abrem no sábado?", name="Marina")
    factories.stored_message(
        conversation_id,
        "Abrimos sim! Aos sábados, das 9h às 13h. Quer agendar um horário? 😊",
        direction="out",
        author="ai",
        payload={"ai": {}},
    )
    factories.stored_message(conversation_id, "E quanto custa o corte com barba?")
    factories.stored_message(
        conversation_id,
        "Obrigado pela mensagem! Nossa equipe responde assim que possível.",
        direction="out",
        author="fallback",
        payload={"ai": {"error": "rate_limited", "detail": "429 RESOURCE_EXHAUSTED"}},
    )
    factories.stored_message(conversation_id, "Quero falar com um atendente")
    factories.stored_message(
        conversation_id,
        "Claro! Vou passar você para uma pessoa da nossa equipe. Ela responde aqui em instantes.",
        direction="out",
        author="ai",
        payload={"ai": {"handoff": "keyword"}},
    )
    db.session.add(
        ConversationNote(
            workspace_id=owner.workspace_id,
            conversation_id=conversation_id,
            text="The customer asked for a person: the bot stopped in this conversation.",
        )
    )
    db.session.commit()
    update_settings(
        owner.workspace_id,
        enabled=True,
        mode="after_hours",
        instructions="Você é o assistente da Barbearia Central. Responda em poucas frases, com simpatia.",
        knowledge=KNOWLEDGE,
        per_minute=15,
        per_day=500,
    )
    row = db.session.get_one(AISettings, owner.workspace_id)
    row.last_error, row.last_error_at = "rate_limited", utcnow() - timedelta(minutes=12)
    row.last_error_detail = (
        "429 RESOURCE_EXHAUSTED: Quota exceeded for metric generate_content_free_tier_requests"
    )
    db.session.commit()
    return conversation_id


def _no_sideways_scroll(page: Page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "sideways scroll"


def test_ai_settings_and_a_thread_with_ai_messages(
    page: Page,
    live_server: str,
    owner: factories.Person,
    gemini: GeminiStub,
    browser_problems: BrowserProblems,
) -> None:
    conversation_id = _a_morning_with_the_bot(owner)
    sign_in(page, live_server, owner.email)
    expect(page).to_have_title(re.compile("Inbox"))
    # Managers are told in the inbox that the bot is on but has no key.
    expect(page.locator("#ai-banner")).to_contain_text("there is no Gemini API key")

    page.locator("#ai-banner a").click()
    expect(page).to_have_title(re.compile("AI replies"))
    status = page.locator("#ai-status")
    expect(status).to_contain_text("AI replies are on, but there is no Gemini API key.")
    expect(status).to_contain_text("The AI could not answer: Gemini's rate limit was hit")
    expect(page.locator("#knowledge-count")).to_have_text(f"{len(KNOWLEDGE):,}")
    hours = page.locator("fieldset.business-hours")
    expect(hours).to_be_visible()  # "outside business hours" is chosen
    # docs/ai-settings.png: the status and the bot's main switches in one window; and the whole page.
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.screenshot(path="test-artifacts/ai-settings.png", caret="initial")
    page.screenshot(path="test-artifacts/ai-settings-full.png", full_page=True, caret="initial")
    page.locator("#mode-always").check()
    expect(hours).to_be_hidden()
    page.locator("#mode-after_hours").check()
    expect(hours).to_be_visible()

    page.get_by_label("Gemini API key", exact=True).fill("AIza-e2e-key")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flashes")).to_contain_text("Settings saved.")
    expect(page.locator("#ai-key-source")).to_contain_text("This workspace\u2019s own key")
    expect(status).not_to_contain_text("there is no Gemini API key")
    assert "AIza-e2e-key" not in page.content()

    page.set_viewport_size(PHONE)
    page.reload()
    _no_sideways_scroll(page)
    page.screenshot(path="test-artifacts/ai-settings-phone.png", full_page=True, caret="initial")
    page.set_viewport_size(DESKTOP)

    page.goto(f"{live_server}/conversations/{conversation_id}")
    expect(page.locator("#ai-banner")).to_have_count(0)
    expect(page.locator("#live-state")).to_have_attribute("data-state", "on")  # the socket is live
    messages = page.locator(f"#messages-{conversation_id}")
    expect(messages.locator(".ai-badge")).to_have_count(3)
    expect(messages).to_contain_text("Fallback: AI could not answer — Gemini's rate limit was hit")
    expect(messages).to_contain_text("AI · handed off")
    page.locator(".notes-panel summary").click()
    expect(page.locator(f"#notes-{conversation_id}")).to_contain_text("Zapdesk ·")

    switch = page.get_by_role("switch", name="Bot on")
    expect(switch).to_have_attribute("aria-checked", "true")
    switch.click()
    expect(page.get_by_role("switch", name="Bot off")).to_have_attribute("aria-checked", "false")

    # "Suggest reply": the draft lands in the composer, to edit; nothing is sent.
    gemini.set_default(Outcome.answer("Olá, Marina! O corte com barba custa R$ 75. Quer agendar?"))
    composer = composer_ready(page)
    page.get_by_role("button", name="Suggest reply").click()
    expect(composer).to_have_value("Olá, Marina! O corte com barba custa R$ 75. Quer agendar?")
    expect(page.locator(".ai-suggestion")).to_contain_text("Draft ready in the reply box")
    expect(messages.locator(".bubble.from-business")).to_have_count(3)  # nothing sent

    # A hand-off elsewhere reaches this page as a notice.
    broker.publish(
        owner.workspace_id,
        {"type": "conversation.handoff", "conversation_id": conversation_id, "by": "keyword"},
    )
    notice = page.locator("#notices .notice")
    expect(notice).to_contain_text("Marina asked for a person", timeout=3_000)
    page.wait_for_timeout(300)  # its slide-in
    page.screenshot(path="test-artifacts/inbox-ai.png", caret="initial")
    notice.get_by_role("button", name="Dismiss").click()
    expect(notice).to_have_count(0)

    page.set_viewport_size(PHONE)
    page.reload()
    expect(page.locator(f"#thread-{conversation_id}")).to_be_visible()
    _no_sideways_scroll(page)
    page.screenshot(path="test-artifacts/inbox-ai-phone.png", caret="initial")
    assert browser_problems.all() == []


def test_a_draft_asked_for_before_a_send_still_lands_in_the_composer(
    app: Flask,
    page: Page,
    live_server: str,
    owner: factories.Person,
    gemini: GeminiStub,
    queued_ai: Huey,
    browser_problems: BrowserProblems,
) -> None:
    app.config["GEMINI_API_KEY"] = "AIza-e2e-key"  # put back by the gemini fixture
    shop = factories.sandbox_account(owner)
    factories.inbound(shop, "+5511988881111", "Vocês abrem no sábado?", name="Marina")
    update_settings(owner.workspace_id, enabled=True, mode="unassigned")
    gemini.set_default(Outcome.answer("Abrimos sim, Marina: aos sábados, das 9h às 13h."))
    sign_in(page, live_server, owner.email)
    page.get_by_text("Marina", exact=True).click()
    composer = composer_ready(page)
    page.get_by_role("button", name="Suggest reply").click()
    draft = page.locator(".ai-suggestion")
    expect(draft).to_contain_text("Writing a draft")  # queued: no worker runs in this test
    composer.fill("Um momento, vou confirmar")
    composer.press("Enter")  # answered with a fresh composer while the draft is being written
    sent = page.locator(".thread .bubble.from-business")
    expect(sent).to_have_count(1)
    expect(composer).to_have_value("")
    expect(draft).to_contain_text("Writing a draft")  # still asked for from the fresh composer
    task = queued_ai.dequeue()  # the worker's turn
    assert task is not None
    queued_ai.execute(task)
    expect(composer).to_have_value("Abrimos sim, Marina: aos sábados, das 9h às 13h.", timeout=5_000)
    expect(draft).to_contain_text("Draft ready in the reply box")
    expect(sent).to_have_count(1)  # the draft is never sent by itself
    # Asked for again, its answer still on its way when the send is answered: it lands all the same.
    held = hold_answers(page, "**/suggestions")
    page.get_by_role("button", name="Suggest reply").click()
    route, answer = wait_for_held(page, held)
    composer.fill("Já confirmo")
    composer.press("Enter")
    expect(sent).to_have_count(2)
    expect(composer).to_have_value("")
    route.fulfill(response=answer)
    page.unroute("**/suggestions")
    expect(draft).to_contain_text("Writing a draft")
    gemini.set_default(Outcome.answer("Confirmado: no sábado abrimos às 9h."))
    task = queued_ai.dequeue()
    assert task is not None
    queued_ai.execute(task)
    expect(composer).to_have_value("Confirmado: no sábado abrimos às 9h.", timeout=5_000)
    expect(sent).to_have_count(2)
    assert browser_problems.all() == []
