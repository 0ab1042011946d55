"""The API's side of the bot: an agent's reply through the API hands the conversation to people,
PATCH ai_enabled hands it back."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests import factories
from tests.ai.conftest import Bot
from tests.fakes.gemini import GeminiStub


def test_an_api_reply_turns_the_bot_off_and_patch_turns_it_on(
    client: FlaskClient, bot: Bot, gemini: GeminiStub
) -> None:
    headers = {"Authorization": f"Bearer {factories.api_token(bot.person)}"}
    conversation_id = bot.say("Oi")
    item = client.get("/api/v1/conversations", headers=headers).get_json()["data"][0]
    assert item["id"] == conversation_id and item["ai_enabled"] is True
    messages = client.get(f"/api/v1/conversations/{conversation_id}/messages", headers=headers).get_json()
    assert [m["author"] for m in messages["data"]] == ["ai", "lead"]  # newest first

    sent = client.post(
        f"/api/v1/conversations/{conversation_id}/messages", json={"text": "Sou a Ana"}, headers=headers
    )
    assert sent.status_code == 202
    assert client.get("/api/v1/conversations", headers=headers).get_json()["data"][0]["ai_enabled"] is False
    bot.say("Oi Ana")
    assert gemini.call_count == 1

    patched = client.patch(
        f"/api/v1/conversations/{conversation_id}", json={"ai_enabled": True}, headers=headers
    )
    assert patched.status_code == 200 and patched.get_json()["ai_enabled"] is True
    bot.say("Ainda está aí?")
    assert gemini.call_count == 2
    assert [m.author for m in bot.replies(conversation_id)] == ["ai", "agent", "ai"]
