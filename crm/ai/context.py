"""What Gemini is given: the workspace's instructions and knowledge, and the last messages of the
conversation, together within a token budget (estimated at 4 characters a token)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from crm.ai.gemini import Turn
from crm.ai.models import AISettings
from crm.auth.models import Workspace
from crm.extensions import db
from crm.inbox.models import Message

CHARS_PER_TOKEN = 4
# Inbound kinds the bot answers; reactions, stickers, orders and system notices get no answer.
ANSWERED_TYPES = frozenset(
    {"text", "button", "interactive", "image", "video", "document", "audio", "voice", "location", "contacts"}
)
_DESCRIBED = {
    "image": "[the customer sent a picture]",
    "video": "[the customer sent a video]",
    "document": "[the customer sent a document]",
    "audio": "[the customer sent a voice message, which you cannot listen to]",
    "voice": "[the customer sent a voice message, which you cannot listen to]",
    "location": "[the customer shared a location]",
    "contacts": "[the customer shared a contact]",
    "sticker": "[sticker]",
    "reaction": "[reaction]",
}

SYSTEM_PROMPT = """You are the WhatsApp assistant of the business "{business}". You answer its \
customers in its name while nobody on its team is available.

Rules:
- Answer in the customer's language, briefly, as in a chat: a few short sentences, no headings, \
plain text (WhatsApp shows *bold* and _italics_).
- Use only the business information below and the conversation. Never invent prices, \
availability, hours, links, policies or promises. If the answer is not there, say that a person \
from the team will confirm it, and set "handoff" to true.
- Set "handoff" to true when the customer asks for a person, is upset, or needs something only \
the team can do (payments, complaints, changes to an order). Otherwise false.
- Never say you are a language model; if asked, say you are the business's automatic assistant.
- {now} ({timezone}).
{instructions}{knowledge}"""


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def describe(message: Message) -> str:
    """A message as the model reads it."""
    text = (message.text or "").strip()
    if message.type in ("text", "button", "interactive"):
        return text
    label = _DESCRIBED.get(message.type, f"[{message.type}]")
    return f"{label} {text}".strip()


def fitted(text: str, tokens: int) -> str:
    """``text`` cut to about ``tokens``, at a line break when one is near the end."""
    limit = tokens * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    cut = text[:limit]
    newline = cut.rfind("\n")
    return cut[:newline] if newline >= limit * 0.8 else cut


def system_prompt(
    settings: AISettings, workspace: Workspace, now: datetime, knowledge_budget: int, day_only: bool = False
) -> str:
    """``day_only``: the date without the time, for an answer that may be reused all day (cache)."""
    instructions = settings.instructions.strip()
    knowledge = fitted(settings.knowledge.strip(), knowledge_budget)
    local = now.astimezone(ZoneInfo(workspace.timezone))
    return SYSTEM_PROMPT.format(
        business=workspace.name,
        now=local.strftime("Today is %A %Y-%m-%d" if day_only else "Now it is %A %Y-%m-%d %H:%M"),
        timezone=workspace.timezone,
        instructions=f"\nInstructions from the business:\n{instructions}\n" if instructions else "",
        knowledge=f"\nBusiness information:\n{knowledge}\n" if knowledge else "",
    )


def conversation_turns(
    conversation_id: int, up_to_id: int | None, limit: int, token_budget: int, customer_last: bool = True
) -> list[Turn]:
    """The last ``limit`` messages (to ``up_to_id`` when given), oldest first, as alternating
    turns, dropping the oldest beyond the token budget. With ``customer_last``, ends with the
    customer's turn, or is empty when there is nothing of theirs to answer."""
    query = select(Message).where(Message.conversation_id == conversation_id)
    if up_to_id is not None:
        query = query.where(Message.id <= up_to_id)
    # The newest by time (the index's order), then in the order they were stored: a customer's
    # message carries the provider's timestamp, in whole seconds, and may look older than the
    # answer it came after.
    rows = sorted(
        db.session.scalars(query.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit)),
        key=lambda m: m.id,
        reverse=True,
    )
    turns: list[Turn] = []
    spent = 0
    for message in rows:  # newest first
        if message.direction == "out" and message.status == "failed":
            continue  # never reached the customer
        text = describe(message)
        if not text:
            continue
        cost = estimate_tokens(text)
        if turns and spent + cost > token_budget:
            break
        if not turns and cost > token_budget:  # one huge message: its end is what matters least
            text = text[: token_budget * CHARS_PER_TOKEN]
            cost = token_budget
        spent += cost
        role = "user" if message.direction == "in" else "model"
        if turns and turns[-1].role == role:
            turns[-1] = Turn(role, f"{text}\n{turns[-1].text}")
        else:
            turns.append(Turn(role, text))
    turns.reverse()
    if not customer_last:
        return turns
    while turns and turns[0].role == "model":  # a conversation starts with the customer's turn
        turns.pop(0)
    if not turns or turns[-1].role != "user":
        return []
    return turns


def knowledge_room(instructions: str, total_tokens: int) -> int:
    """Tokens of knowledge that go with each request (the rest is cut, and the page says so)."""
    fixed = estimate_tokens(SYSTEM_PROMPT) + estimate_tokens(instructions) + 50
    return max(0, (total_tokens * 2) // 3 - fixed)


def build(
    settings: AISettings,
    workspace: Workspace,
    conversation_id: int,
    up_to_id: int | None,
    now: datetime,
    total_tokens: int,
    customer_last: bool = True,
    day_only: bool = False,
) -> tuple[str, list[Turn]]:
    """The system prompt and the turns, together within ``total_tokens``: the knowledge may take
    up to two thirds, the conversation gets the rest (at least a quarter)."""
    fixed = estimate_tokens(SYSTEM_PROMPT) + estimate_tokens(settings.instructions) + 50
    knowledge_budget = min(
        estimate_tokens(settings.knowledge), knowledge_room(settings.instructions, total_tokens)
    )
    history_budget = max(total_tokens // 4, total_tokens - fixed - knowledge_budget)
    turns = conversation_turns(
        conversation_id, up_to_id, settings.history_messages, history_budget, customer_last
    )
    return system_prompt(settings, workspace, now, knowledge_budget, day_only), turns
