"""AI replies end to end: customer message → ingest → AI queue → Gemini stub (real SDK, real HTTP)
→ outbox → sandbox number."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from flask import Flask
from sqlalchemy import func, select, update

from crm.ai.models import AICacheEntry, AICall, AIReply, AISettings
from crm.ai.replies import answer, reconcile
from crm.db import utcnow
from crm.extensions import db
from crm.inbox.models import Conversation, ConversationNote
from crm.inbox.sending import reply as agent_reply
from crm.inbox.services import set_ai_enabled
from tests.ai.conftest import Bot
from tests.fakes.gemini import GeminiStub, Outcome


def test_the_bot_answers_a_customer_through_the_outbox(bot: Bot, gemini: GeminiStub) -> None:
    conversation_id = bot.say("Quanto custa um corte?")

    [sent] = bot.replies(conversation_id)
    assert (sent.author, sent.text) == ("ai", "Bot: Quanto custa um corte?")
    assert sent.status == "delivered"  # by the sandbox number, through the outbox
    [call] = gemini.calls
    assert call.api_key == "test-gemini-key"
    assert call.wants_json
    assert "R$ 50" in (call.system_instruction or "")  # the knowledge
    assert "Be friendly." in (call.system_instruction or "")  # the instructions
    assert call.texts[-1] == ("user", "Quanto custa um corte?")
    [job] = bot.jobs(conversation_id)
    assert (job.status, job.reply_message_id, job.attempts) == ("answered", sent.id, 1)


def test_the_context_is_the_last_messages_in_turns(bot: Bot, gemini: GeminiStub) -> None:
    bot.settings(history_messages=3)
    conversation_id = bot.say("Oi")
    bot.say("Vocês abrem sábado?")
    bot.say("E domingo?")

    last = gemini.calls[-1]
    # Three messages of context: the bot's last answer, and the customer's newest message... in turns.
    assert last.texts == [
        ("user", "Vocês abrem sábado?"),
        ("model", "Bot: Vocês abrem sábado?"),
        ("user", "E domingo?"),
    ]
    assert len(bot.replies(conversation_id)) == 3


def test_a_duplicate_webhook_and_a_retried_task_reply_once(bot: Bot, gemini: GeminiStub) -> None:
    conversation_id = bot.say("Tem horário amanhã?", message_id="wamid.same")
    bot.say("Tem horário amanhã?", message_id="wamid.same")  # Meta delivers it again
    [job] = bot.jobs(conversation_id)
    assert answer(job.id) == "settled"  # the queue runs the job again
    assert reconcile() == 0

    assert len(bot.replies(conversation_id)) == 1
    assert gemini.call_count == 1


def test_an_agent_reply_stops_the_bot_until_it_is_turned_back_on(bot: Bot, gemini: GeminiStub) -> None:
    conversation_id = bot.say("Oi")
    agent_reply(bot.workspace_id, conversation_id, "Olá, aqui é a Ana!", user_id=bot.person.user_id)
    assert db.session.get_one(Conversation, conversation_id).ai_enabled is False

    bot.say("Oi Ana, tudo bem?")
    assert [m.author for m in bot.replies(conversation_id)] == ["ai", "agent"]
    assert bot.jobs(conversation_id)[1:] == []  # nothing owed: the bot is off here
    assert gemini.call_count == 1

    set_ai_enabled(bot.workspace_id, conversation_id, True)
    bot.say("Ainda está aí?")
    assert [m.author for m in bot.replies(conversation_id)] == ["ai", "agent", "ai"]


def test_an_answer_from_the_business_phone_stops_the_bot(bot: Bot, gemini: GeminiStub) -> None:
    from crm.whatsapp.events import InboundMessage
    from crm.whatsapp.inbound import ingest_message

    conversation_id = bot.say("Oi")
    ingest_message(
        bot.account_id,
        InboundMessage(
            provider_message_id="wamid.echo",
            type="text",
            text="Respondi pelo celular",
            timestamp=utcnow(),
            phone="+5511988887777",
            direction="out",
        ),
    )
    bot.say("Obrigada!")
    assert db.session.get_one(Conversation, conversation_id).ai_enabled is False
    assert gemini.call_count == 1


def test_an_agent_answering_while_the_job_waits_wins(bot: Bot, gemini: GeminiStub, app: Flask) -> None:
    app.config["AI_DEBOUNCE_SECONDS"] = 3.0
    try:
        conversation_id = bot.say("Oi")
        agent_reply(bot.workspace_id, conversation_id, "Oi! Sou a Ana.", user_id=bot.person.user_id)
        [job] = bot.jobs(conversation_id)
        with time_machine.travel(utcnow() + timedelta(seconds=4)):
            assert answer(job.id) == "skipped:bot_off"
    finally:
        app.config["AI_DEBOUNCE_SECONDS"] = 0.0
    assert gemini.call_count == 0
    assert [m.author for m in bot.replies(conversation_id)] == ["agent"]


@pytest.mark.parametrize(
    "text", ["Quero falar com um ATENDENTE", "humano por favor", "Can I talk to an agent?"]
)
def test_asking_for_a_person_hands_off(bot: Bot, gemini: GeminiStub, text: str) -> None:
    conversation_id = bot.say(text)

    [sent] = bot.replies(conversation_id)
    assert sent.author == "ai" and sent.payload == {"ai": {"handoff": "keyword"}}
    assert "pessoa" in sent.text  # the default hand-off message, in the workspace's language (pt_BR)
    conversation = db.session.get_one(Conversation, conversation_id)
    assert conversation.ai_enabled is False
    [note] = db.session.scalars(
        select(ConversationNote).where(ConversationNote.conversation_id == conversation_id)
    )
    assert note.author_user_id is None
    assert gemini.call_count == 0  # no call needed
    bot.say("Alô?")
    assert len(bot.replies(conversation_id)) == 1  # the team answers now


def test_hand_off_keywords_and_message_are_the_workspaces(bot: Bot, gemini: GeminiStub) -> None:
    bot.settings(handoff_keywords="gerente, falar com alguém", handoff_message="Já chamo o gerente.")
    conversation_id = bot.say("Quero falar com ALGUEM!")
    assert [m.text for m in bot.replies(conversation_id)] == ["Já chamo o gerente."]
    other = bot.say("Tem atendente?", phone="+5511900001111")  # not a keyword any more
    assert bot.replies(other)[0].text == "Bot: Tem atendente?"


def test_gemini_can_hand_off(bot: Bot, gemini: GeminiStub) -> None:
    gemini.script(Outcome.json_answer({"reply": "Vou chamar alguém.", "handoff": True}))
    conversation_id = bot.say("Meu pedido veio errado e quero meu dinheiro de volta")

    [sent] = bot.replies(conversation_id)
    assert sent.payload == {"ai": {"handoff": "ai"}}
    assert db.session.get_one(Conversation, conversation_id).ai_enabled is False


def test_a_429_is_retried_after_the_delay_gemini_asked_for(bot: Bot, gemini: GeminiStub) -> None:
    gemini.script(Outcome.rate_limited("7s"))
    start = utcnow()
    conversation_id = bot.say("Vocês entregam?")

    [job] = bot.jobs(conversation_id)
    assert (job.status, job.error, job.attempts) == ("pending", "rate_limited", 1)
    assert job.due_at >= start + timedelta(seconds=7)  # RetryInfo honoured, backoff added
    assert bot.replies(conversation_id) == []  # no fallback yet: there is time
    assert answer(job.id) == "not_due"  # the job woken early gives it back

    with time_machine.travel(job.due_at + timedelta(milliseconds=10)):
        assert answer(job.id) == "answered"
    assert [m.author for m in bot.replies(conversation_id)] == ["ai"]
    assert gemini.call_count == 2


def test_server_errors_back_off_exponentially_then_answer(bot: Bot, gemini: GeminiStub) -> None:
    gemini.script(Outcome.internal(), Outcome.unavailable(), Outcome.internal())
    conversation_id = bot.say("Qual o endereço?")
    delays = []
    for _ in range(3):
        [job] = bot.jobs(conversation_id)
        if job.status != "pending":
            break
        delays.append((job.due_at - job.updated_at).total_seconds())
        with time_machine.travel(job.due_at + timedelta(milliseconds=10)):
            answer(job.id)
    [job] = bot.jobs(conversation_id)
    assert job.status == "answered" and job.attempts == 4
    # Full jitter over a doubling ceiling: attempt n waits between 2^(n-2) and 2^(n-1) seconds.
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and 2.0 <= delays[2] <= 4.0
    assert [m.author for m in bot.replies(conversation_id)] == ["ai"]


def test_after_the_retry_budget_the_customer_gets_the_fallback(
    bot: Bot, gemini: GeminiStub, app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    gemini.set_default(Outcome.rate_limited("1s"))
    conversation_id = bot.say("Vocês aceitam pix?")
    while (job := bot.jobs(conversation_id)[0]).status == "pending":
        with time_machine.travel(job.due_at + timedelta(milliseconds=10)):
            answer(job.id)

    assert (job.status, job.error, job.attempts) == (
        "fallback",
        "rate_limited",
        app.config["AI_MAX_ATTEMPTS"],
    )
    [sent] = bot.replies(conversation_id)
    assert sent.author == "fallback"
    assert sent.text.startswith("Obrigado pela mensagem")  # the default fallback, in Portuguese
    assert sent.payload is not None and sent.payload["ai"]["error"] == "rate_limited"
    assert "the customer gets the fallback (rate_limited)" in caplog.text
    settings = db.session.get_one(AISettings, bot.workspace_id)
    assert settings.last_error == "rate_limited"  # admins see why


def test_the_deadline_ends_retries_with_the_fallback(bot: Bot, gemini: GeminiStub) -> None:
    bot.settings(fallback="Já já alguém responde, {{name}}!")
    gemini.set_default(Outcome.rate_limited("120s"))  # longer than the reply deadline
    conversation_id = bot.say("Alguém aí?")

    [sent] = bot.replies(conversation_id)
    assert (sent.author, sent.text) == ("fallback", "Já já alguém responde, {{name}}!")
    assert gemini.call_count == 1


def test_a_timeout_is_retried(bot: Bot, gemini: GeminiStub, app: Flask) -> None:
    app.config["AI_TIMEOUT_SECONDS"] = 0.3
    gemini.script(Outcome.hang(3))
    conversation_id = bot.say("Tem estacionamento?")
    [job] = bot.jobs(conversation_id)
    assert (job.status, job.error) == ("pending", "timeout")
    with time_machine.travel(job.due_at + timedelta(milliseconds=10)):
        assert answer(job.id) == "answered"


def test_a_spent_daily_quota_pauses_the_bot_for_the_day(bot: Bot, gemini: GeminiStub) -> None:
    gemini.script(Outcome.daily_quota())
    first = bot.say("Oi, bom dia")
    assert [m.author for m in bot.replies(first)] == ["fallback"]
    settings = db.session.get_one(AISettings, bot.workspace_id)
    assert settings.pause_reason == "daily_quota"
    assert settings.paused_until is not None and settings.paused_until > utcnow()

    second = bot.say("Oi", phone="+5511900002222")
    assert [m.author for m in bot.replies(second)] == ["fallback"]
    assert gemini.call_count == 1  # paused: not asked again today

    with time_machine.travel(settings.paused_until + timedelta(seconds=1)):
        third = bot.say("Bom dia!", phone="+5511900003333")
        assert [m.author for m in bot.replies(third)] == ["ai"]


def test_without_a_key_customers_get_the_fallback_and_admins_see_why(
    bot: Bot, gemini: GeminiStub, app: Flask
) -> None:
    app.config["GEMINI_API_KEY"] = None
    conversation_id = bot.say("Oi")

    [sent] = bot.replies(conversation_id)
    assert sent.author == "fallback" and sent.payload == {"ai": {"error": "no_key", "detail": ""}}
    assert db.session.get_one(AISettings, bot.workspace_id).last_error == "no_key"
    assert gemini.call_count == 0


def test_a_workspace_key_is_used_and_a_bad_one_falls_back_at_once(bot: Bot, gemini: GeminiStub) -> None:
    gemini.api_keys = {"workspace-own-key"}
    try:
        bot.settings(api_key="workspace-own-key")
        ok = bot.say("Oi")
        assert [m.author for m in bot.replies(ok)] == ["ai"]
        assert gemini.calls[-1].api_key == "workspace-own-key"
        bot.settings(api_key="revoked-key")
        bad = bot.say("Oi", phone="+5511900004444")
    finally:
        gemini.api_keys = None
    assert [m.author for m in bot.replies(bad)] == ["fallback"]
    assert db.session.get_one(AISettings, bot.workspace_id).last_error == "auth"
    assert bot.jobs(bad)[0].attempts == 1  # not retried: a wrong key stays wrong


def test_the_minute_budget_is_never_exceeded(bot: Bot, gemini: GeminiStub) -> None:
    bot.settings(per_minute=2)
    conversations = [bot.say(f"Pergunta número {n}", phone=f"+55119000050{n:02d}") for n in range(3)]

    assert gemini.call_count == 2
    waiting = bot.jobs(conversations[2])[0]
    assert (waiting.status, waiting.error, waiting.attempts) == ("pending", "budget_minute", 0)
    assert waiting.due_at - utcnow() > timedelta(seconds=50)  # when the oldest call leaves the window
    with time_machine.travel(waiting.due_at + timedelta(milliseconds=10)):
        assert answer(waiting.id) == "answered"
    # The calls as the budget recorded them (the stub's own clock doesn't travel in time).
    calls = db.session.scalars(select(AICall.at).order_by(AICall.at)).all()
    assert len(calls) == 3 and calls[2] - calls[0] >= timedelta(seconds=60)


def test_the_minute_budget_falls_back_past_the_deadline(bot: Bot, gemini: GeminiStub, app: Flask) -> None:
    bot.settings(per_minute=1)
    app.config["AI_REPLY_DEADLINE_SECONDS"] = 20
    try:
        bot.say("Primeira pergunta do dia")
        late = bot.say("Segunda pergunta do dia", phone="+5511900006666")
    finally:
        app.config["AI_REPLY_DEADLINE_SECONDS"] = 90
    assert [(m.author, m.payload) for m in bot.replies(late)] == [
        ("fallback", {"ai": {"error": "budget_minute", "detail": ""}})
    ]
    assert gemini.call_count == 1


def test_the_day_budget_sends_the_fallback(bot: Bot, gemini: GeminiStub) -> None:
    bot.settings(per_day=1)
    bot.say("Primeira pergunta do dia")
    spent = bot.say("Segunda pergunta do dia", phone="+5511900007777")
    assert [m.author for m in bot.replies(spent)] == ["fallback"]
    assert bot.jobs(spent)[0].error == "budget_day"
    assert gemini.call_count == 1


def test_quick_messages_get_one_answer(bot: Bot, gemini: GeminiStub, app: Flask) -> None:
    app.config["AI_DEBOUNCE_SECONDS"] = 3.0
    try:
        conversation_id = bot.say("Oi")
        bot.say("queria saber")
        bot.say("o preço do corte")
        jobs = bot.jobs(conversation_id)
        assert [j.status for j in jobs] == ["pending"] * 3
        assert bot.replies(conversation_id) == []  # nothing before the customer pauses
        with time_machine.travel(jobs[-1].due_at + timedelta(milliseconds=10)):
            outcomes = [answer(job.id) for job in jobs]
    finally:
        app.config["AI_DEBOUNCE_SECONDS"] = 0.0
    assert outcomes == ["superseded:newer_message", "superseded:newer_message", "answered"]
    [call] = gemini.calls
    assert call.texts == [("user", "Oi\nqueria saber\no preço do corte")]
    assert len(bot.replies(conversation_id)) == 1


def test_repeated_questions_are_answered_from_the_cache(bot: Bot, gemini: GeminiStub) -> None:
    first = bot.say("Qual o horário de funcionamento?")
    second = bot.say("qual o HORÁRIO de funcionamento", phone="+5511900008888")
    assert gemini.call_count == 1
    [cached] = bot.replies(second)
    assert cached.text == bot.replies(first)[0].text
    assert cached.payload == {"ai": {"cached": True}}
    assert db.session.scalar(select(AICacheEntry.hits)) == 1

    short = bot.say("Oi", phone="+5511900009999")  # too short to mean the same everywhere
    bot.say("Oi", phone="+5511900009998")
    assert gemini.call_count == 3 and bot.replies(short)

    bot.settings(knowledge="Abrimos das 8h às 20h.")  # new settings: old answers are not served
    bot.say("Qual o horário de funcionamento?", phone="+5511900009997")
    assert gemini.call_count == 4


def test_cached_answers_expire(bot: Bot, gemini: GeminiStub) -> None:
    bot.settings(cache_hours=1)
    bot.say("Vocês fazem entrega em casa?")
    with time_machine.travel(utcnow() + timedelta(hours=1, minutes=1)):
        bot.say("Vocês fazem entrega em casa?", phone="+5511900001234")
    assert gemini.call_count == 2


def test_only_unassigned_conversations_in_that_mode(bot: Bot, gemini: GeminiStub) -> None:
    from crm.inbox.services import assign

    bot.settings(mode="unassigned")
    conversation_id = bot.say("Oi")
    assign(bot.workspace_id, conversation_id, bot.person.user_id)
    bot.say("Alguém?")
    assert gemini.call_count == 1 and len(bot.replies(conversation_id)) == 1


def test_outside_business_hours_mode(bot: Bot, gemini: GeminiStub) -> None:
    # Business hours 08:00-18:00 Monday to Friday in São Paulo (UTC-3).
    bot.settings(mode="after_hours", hours_days=[0, 1, 2, 3, 4], hours_start="08:00", hours_end="18:00")
    with time_machine.travel("2026-12-02 14:00:00+00:00"):  # Wednesday 11:00 there: the team is in
        inside = bot.say("Oi")
    with time_machine.travel("2026-12-02 23:30:00+00:00"):  # 20:30
        evening = bot.say("Oi", phone="+5511900001212")
    with time_machine.travel("2026-12-05 14:00:00+00:00"):  # Saturday
        saturday = bot.say("Oi", phone="+5511900001313")
    assert bot.replies(inside) == []
    assert [m.author for m in bot.replies(evening)] == ["ai"]
    assert [m.author for m in bot.replies(saturday)] == ["ai"]


def test_numbers_can_be_left_out(bot: Bot, gemini: GeminiStub) -> None:
    from crm.whatsapp.models import WhatsAppAccount

    db.session.get_one(WhatsAppAccount, bot.account_id).ai_enabled = False
    db.session.commit()
    conversation_id = bot.say("Oi")
    assert bot.replies(conversation_id) == [] and gemini.call_count == 0


def test_consent_keywords_reactions_and_groups_get_no_ai_answer(bot: Bot, gemini: GeminiStub) -> None:
    stop = bot.say("SAIR")
    assert [m.author for m in bot.replies(stop)] != ["ai"]  # the opt-out confirmation only
    assert all(m.author != "ai" for m in bot.replies(stop))
    reaction = bot.say("👍", phone="+5511900001414", type="reaction")
    assert bot.replies(reaction) == []
    assert gemini.call_count == 0


def test_an_opted_out_customer_gets_nothing(bot: Bot, gemini: GeminiStub) -> None:
    conversation_id = bot.say("SAIR")
    sent_before = len(bot.replies(conversation_id))
    set_ai_enabled(bot.workspace_id, conversation_id, True)
    bot.say("e agora?")
    assert len(bot.replies(conversation_id)) == sent_before
    assert bot.jobs(conversation_id)[-1].error == "opted_out"
    assert gemini.call_count == 0  # not even asked


def test_a_lost_job_is_found_again(bot: Bot, gemini: GeminiStub) -> None:
    from crm.ai import replies

    lost: list[int] = []
    original = replies.enqueue_after_commit
    replies.enqueue_after_commit = lambda reply_id, delay: lost.append(reply_id)  # type: ignore[assignment]
    try:
        conversation_id = bot.say("Oi, tudo bem?")
    finally:
        replies.enqueue_after_commit = original  # type: ignore[assignment]
    assert lost and bot.replies(conversation_id) == []
    assert reconcile(stale_after=timedelta(0)) == 1
    assert [m.author for m in bot.replies(conversation_id)] == ["ai"]


def test_a_job_whose_worker_died_is_taken_over_after_its_lease(bot: Bot, gemini: GeminiStub) -> None:
    from sqlalchemy import update

    from crm.ai.models import AIReply

    gemini.script(Outcome.rate_limited("0s"))
    conversation_id = bot.say("Oi")
    [job] = bot.jobs(conversation_id)
    db.session.execute(
        update(AIReply).values(status="answering", lease_until=utcnow() + timedelta(minutes=2))
    )
    db.session.commit()
    assert answer(job.id) == "taken"
    with time_machine.travel(utcnow() + timedelta(minutes=3)):
        assert reconcile() == 1
    assert [m.author for m in bot.replies(conversation_id)] == ["ai"]


def test_the_context_fits_the_token_budget(bot: Bot, gemini: GeminiStub, app: Flask) -> None:
    from crm.ai.context import CHARS_PER_TOKEN

    app.config["AI_CONTEXT_TOKENS"] = 2000
    try:
        bot.settings(knowledge="Preços e horários. " * 2000, history_messages=50)
        conversation_id = bot.say("x" * 100)
        for n in range(10):
            bot.say(f"Mensagem longa {n} " + "y" * 1500)
    finally:
        app.config["AI_CONTEXT_TOKENS"] = 12000
    call = gemini.calls[-1]
    sent_chars = len(call.system_instruction or "") + sum(len(text) for _, text in call.texts)
    assert sent_chars <= 2000 * CHARS_PER_TOKEN * 1.1
    assert call.texts[-1][1].startswith("Mensagem longa 9")  # the newest is always there
    assert len(bot.replies(conversation_id)) == 11


def test_every_reply_is_counted_against_the_budget(bot: Bot, gemini: GeminiStub) -> None:
    gemini.script(Outcome.internal())
    conversation_id = bot.say("Oi")
    [job] = bot.jobs(conversation_id)
    with time_machine.travel(job.due_at + timedelta(milliseconds=10)):
        answer(job.id)
    outcomes = db.session.scalars(select(AICall.outcome).order_by(AICall.id)).all()
    assert outcomes == ["server", "ok"]
    assert db.session.scalar(select(func.count()).select_from(AICall)) == gemini.call_count


def test_a_customer_message_stamped_before_the_bots_answer_is_answered(bot: Bot, gemini: GeminiStub) -> None:
    conversation_id = bot.say("Oi")
    # Cloud webhooks carry whole seconds: the next message may look older than our answer.
    bot.say("Quanto custa o corte?", at=utcnow() - timedelta(seconds=1))
    assert [j.status for j in bot.jobs(conversation_id)] == ["answered", "answered"]
    assert gemini.calls[-1].texts[-1] == ("user", "Quanto custa o corte?")
    assert len(bot.replies(conversation_id)) == 2


def test_a_retried_answer_steps_aside_for_a_newer_message(bot: Bot, gemini: GeminiStub) -> None:
    gemini.script(Outcome.rate_limited("5s"))
    conversation_id = bot.say("Oi")
    bot.say("Vocês abrem amanhã?")  # its job answers the whole turn
    first, second = bot.jobs(conversation_id)
    assert (first.status, first.error) == ("pending", "rate_limited")
    assert second.status == "answered"
    assert gemini.calls[-1].texts == [("user", "Oi\nVocês abrem amanhã?")]
    with time_machine.travel(first.due_at + timedelta(milliseconds=10)):
        assert answer(first.id) == "superseded:newer_message"
    assert [m.author for m in bot.replies(conversation_id)] == ["ai"]
    assert gemini.call_count == 2


def test_an_answer_overtaken_by_a_new_message_is_dropped(bot: Bot, gemini: GeminiStub, app: Flask) -> None:
    from crm.ai import replies

    original = replies.generate

    def generate_while_the_customer_writes(*args: object, **kwargs: object) -> object:
        bot.say("e no sábado?")  # its own job waits for the debounce
        return original(*args, **kwargs)  # type: ignore[arg-type]

    replies.generate = generate_while_the_customer_writes  # type: ignore[assignment]
    app.config["AI_DEBOUNCE_SECONDS"] = 3.0
    try:
        conversation_id = bot.say("Vocês abrem amanhã?")
        [first] = bot.jobs(conversation_id)
        db.session.execute(update(AIReply).where(AIReply.id == first.id).values(due_at=utcnow()))
        db.session.commit()
        assert answer(first.id) == "superseded:newer_message"  # Gemini's answer to half the turn
        second = bot.jobs(conversation_id)[1]
    finally:
        replies.generate = original  # type: ignore[assignment]
        app.config["AI_DEBOUNCE_SECONDS"] = 0.0
    assert bot.replies(conversation_id) == []
    with time_machine.travel(second.due_at + timedelta(milliseconds=10)):
        assert answer(second.id) == "answered"
    assert gemini.calls[-1].texts == [("user", "Vocês abrem amanhã?\ne no sábado?")]
    assert len(bot.replies(conversation_id)) == 1


def test_a_person_answering_during_the_call_wins(bot: Bot, gemini: GeminiStub) -> None:
    from crm.ai import replies

    original = replies.generate
    conversation: list[int] = []

    def generate_while_agent_answers(*args: object, **kwargs: object) -> object:
        agent_reply(bot.workspace_id, conversation[0], "Deixa comigo!", user_id=bot.person.user_id)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    bot.say("Oi")  # creates the conversation (answered)
    conversation.append(bot.conversation_of("+5511988887777"))
    replies.generate = generate_while_agent_answers  # type: ignore[assignment]
    try:
        set_ai_enabled(bot.workspace_id, conversation[0], True)
        bot.say("Preciso de ajuda com meu pedido")
    finally:
        replies.generate = original  # type: ignore[assignment]
    assert [m.author for m in bot.replies(conversation[0])] == ["ai", "agent"]
    assert bot.jobs(conversation[0])[-1].error == "bot_off"


def test_only_first_questions_are_cached(bot: Bot, gemini: GeminiStub) -> None:
    a = bot.say("Oi, aqui é a Joana, pedido 4471")
    bot.say("quando chega o meu pedido?", phone=bot_phone(a, bot))
    bot.say("quando chega o meu pedido?", phone="+5511900003030")
    assert gemini.call_count == 3  # the other customer's answer is not theirs to get
    assert db.session.scalar(select(func.count()).select_from(AICacheEntry)) == 2


def bot_phone(conversation_id: int, bot: Bot) -> str:
    from crm.leads.models import Lead

    lead = db.session.get_one(Lead, db.session.get_one(Conversation, conversation_id).lead_id)
    assert lead.phone
    return lead.phone


def test_a_cached_answer_knows_only_the_date(bot: Bot, gemini: GeminiStub) -> None:
    bot.say("Vocês estão abertos agora?")
    assert "Today is" in (gemini.calls[0].system_instruction or "")
    bot.say("Oi")  # a second turn: the time matters
    assert "Now it is" in (gemini.calls[1].system_instruction or "")


def test_a_cut_or_broken_answer_is_retried(bot: Bot, gemini: GeminiStub) -> None:
    gemini.script(Outcome.answer('{"reply": "Olá! Nosso corte custa R$ 50 e'))
    conversation_id = bot.say("Quanto custa?")
    [job] = bot.jobs(conversation_id)
    assert (job.status, job.error) == ("pending", "malformed")
    assert bot.replies(conversation_id) == []  # nothing half-written reached the customer
    with time_machine.travel(job.due_at + timedelta(milliseconds=10)):
        assert answer(job.id) == "answered"


def test_long_answers_are_cut_at_whatsapps_limit(bot: Bot, gemini: GeminiStub) -> None:
    gemini.script(Outcome.json_answer({"reply": "a" * 5000, "handoff": False}))
    conversation_id = bot.say("Me conte tudo sobre vocês")
    assert len(bot.replies(conversation_id)[0].text) == 4096


def test_an_unexpected_error_is_retried_then_falls_back(
    bot: Bot, gemini: GeminiStub, caplog: pytest.LogCaptureFixture
) -> None:
    from crm.ai import replies

    original = replies.build
    failures = {"left": 1}

    def broken_build(*args: object, **kwargs: object) -> object:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("boom")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    replies.build = broken_build  # type: ignore[assignment]
    try:
        conversation_id = bot.say("Oi")
        [job] = bot.jobs(conversation_id)
        assert (job.status, job.error, job.attempts) == ("pending", "error", 1)
        assert "failed unexpectedly" in caplog.text
        with time_machine.travel(job.due_at + timedelta(milliseconds=10)):
            assert answer(job.id) == "answered"
        failures["left"] = 100
        other = bot.say("Oi", phone="+5511900004040")
        while (job := bot.jobs(other)[0]).status == "pending":
            with time_machine.travel(job.due_at + timedelta(milliseconds=10)):
                answer(job.id)
    finally:
        replies.build = original  # type: ignore[assignment]
    assert (job.status, job.error) == ("fallback", "error")
    assert [m.author for m in bot.replies(other)] == ["fallback"]


def test_ordinary_words_are_not_hand_off_keywords(bot: Bot, gemini: GeminiStub) -> None:
    conversation_id = bot.say("Quanto custa por pessoa?")
    assert bot.replies(conversation_id)[0].payload == {"ai": {}}
    assert db.session.get_one(Conversation, conversation_id).ai_enabled is True


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        ("2026-12-04 22:30", True),  # Friday 22:30: open
        ("2026-12-05 01:30", True),  # the small hours of Saturday belong to Friday's opening
        ("2026-12-05 22:30", False),  # Saturday evening: closed
        ("2026-12-07 01:30", False),  # the small hours of Monday belong to Sunday: closed
        ("2026-12-07 12:00", False),  # Monday noon: between closing and opening
    ],
)
def test_business_hours_past_midnight(at: str, inside: bool) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from crm.ai.settings import within_business_hours

    settings = AISettings(hours_days="0,1,2,3,4", hours_start="18:00", hours_end="02:00")
    local = datetime.fromisoformat(at).replace(tzinfo=ZoneInfo("America/Sao_Paulo"))
    assert within_business_hours(settings, "America/Sao_Paulo", local) is inside
