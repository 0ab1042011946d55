"""A customer writing to a Cloud API number gets the AI's answer through the Graph API, once,
however often Meta delivers the webhook."""

from __future__ import annotations

from flask.testing import FlaskClient

from crm.ai.settings import update_settings
from crm.inbox.models import Message
from tests import factories
from tests.fakes.gemini import GeminiStub
from tests.fakes.graph_api import GraphEmulator
from tests.whatsapp.conftest import graph, graph_api, make_cloud_account, post_webhook

__all__ = ["graph", "graph_api"]  # fixtures


def test_a_cloud_customer_gets_one_ai_answer(
    client: FlaskClient, owner: factories.Person, graph_api: GraphEmulator, gemini: GeminiStub
) -> None:
    account = make_cloud_account(owner, graph_api)
    update_settings(owner.workspace_id, enabled=True)
    body = graph_api.message_payload(
        from_phone="5511977776666", text="Vocês abrem no feriado?", wamid="wamid.X1"
    )

    for _ in range(3):  # Meta retries a delivery it thinks failed
        assert post_webhook(client, account, body).status_code == 200

    [sent] = graph_api.sent
    assert sent.to == "5511977776666"
    assert sent.json["text"]["body"] == "Bot: Vocês abrem no feriado?"
    assert gemini.call_count == 1
    from sqlalchemy import select

    from crm.extensions import db

    authors = db.session.scalars(select(Message.author).order_by(Message.id)).all()
    assert authors == ["lead", "ai"]
