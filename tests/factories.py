"""Test data per domain, built through the same services the product uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from crm.auth import services, team
from crm.auth.models import Membership, Role, User, UserSession
from crm.extensions import db

PASSWORD = "correct horse battery"


@dataclass
class Person:
    user_id: int
    workspace_id: int
    membership_id: int
    email: str

    @property
    def membership(self) -> Membership:
        m = db.session.get(Membership, self.membership_id)
        assert m is not None
        return m


def person(workspace: str, email: str, role: str = "agent", password: str = PASSWORD) -> Person:
    """A member of ``workspace`` (created if needed) with ``role``."""
    created = services.create_admin(workspace, email, password)
    membership = db.session.scalar(
        select(Membership).where(
            Membership.workspace_id == created.workspace_id, Membership.user_id == created.user_id
        )
    )
    assert membership is not None
    if role != Role.OWNER.value:
        membership.role = role
        db.session.commit()
    return Person(created.user_id, created.workspace_id, membership.id, email)


def session_for(p: Person) -> UserSession:
    user = db.session.get(User, p.user_id)
    assert user is not None
    token = services.start_session(user, p.workspace_id, "127.0.0.1", "tests")
    return db.session.scalar(select(UserSession).order_by(UserSession.id.desc()).limit(1)) or _fail(token)


def _fail(token: str) -> UserSession:
    raise AssertionError(f"no session row for {token[:4]}")


def api_token(p: Person, name: str = "test") -> str:
    return team.create_api_token(p.workspace_id, p.user_id, name).token


def invitation(p: Person, email: str, role: str = "agent") -> team.NewInvitation:
    return team.create_invitation(p.workspace_id, p.membership, email, role)


def api_token_row(p: Person, name: str = "test") -> int:
    return team.create_api_token(p.workspace_id, p.user_id, name).api_token.id


def sandbox_account(p: Person, name: str = "Sandbox") -> int:
    from crm.whatsapp.accounts import create_account

    return create_account(p.workspace_id, provider="sandbox", name=name).id


def cloud_account(p: Person, name: str = "Cloud") -> int:
    """A Cloud API number with placeholder credentials (nothing here reaches the Graph API)."""
    from crm.whatsapp.accounts import CloudSettings, create_account

    settings = CloudSettings(phone_number_id="1", access_token="t", app_secret="s", verify_token="v")
    return create_account(p.workspace_id, provider="cloud", name=name, cloud=settings).id


def inbound(account_id: int, phone: str = "+5511999990000", text: str = "Olá", name: str = "Cliente") -> int:
    """A customer's message arriving on a number, through the real ingest path; the conversation id."""
    import uuid

    from crm.db import utcnow
    from crm.inbox.models import Message
    from crm.whatsapp.events import InboundMessage
    from crm.whatsapp.inbound import ingest_message

    summary = ingest_message(
        account_id,
        InboundMessage(
            provider_message_id=f"test.{uuid.uuid4().hex}",
            type="text",
            text=text,
            timestamp=utcnow(),
            phone=phone,
            name=name,
        ),
    )
    message = db.session.get(Message, summary.stored[0])
    assert message is not None
    return message.conversation_id


def conversation(p: Person) -> int:
    return inbound(sandbox_account(p))


def stored_message(conversation_id: int, text: str, *, direction: str = "in", **fields: object) -> int:
    """A message row as the pipeline leaves it (no provider call), for tests about reading them."""
    from crm.inbox.models import Conversation, Message

    conversation = db.session.get(Conversation, conversation_id)
    assert conversation is not None
    incoming = direction == "in"
    values: dict[str, object] = {
        "workspace_id": conversation.workspace_id,
        "conversation_id": conversation_id,
        "account_id": conversation.account_id,
        "direction": direction,
        "text": text,
        "status": "received" if incoming else "sent",
        "provider": "sandbox",
        "author": "lead" if incoming else "agent",
        **fields,
    }
    message = Message(**values)
    db.session.add(message)
    db.session.flush()
    if message.provider_message_id is not None:
        from crm.inbox.keys import record_key

        record_key(message.account_id, message.provider_message_id, message.id, message.created_at)
    db.session.commit()
    return message.id


def ai_suggestion(p: Person) -> int:
    """A "suggest reply" draft asked for by ``p`` in a new conversation (still pending); its id."""
    from crm.ai.models import AISuggestion

    suggestion = AISuggestion(workspace_id=p.workspace_id, conversation_id=conversation(p), user_id=p.user_id)
    db.session.add(suggestion)
    db.session.commit()
    return suggestion.id


def canned_reply(p: Person, shortcut: str = "hello", text: str = "Olá {{name}}!") -> int:
    from crm.inbox.canned import create_canned

    return create_canned(p.workspace_id, p.membership, shortcut, text).id


def inbound_file(
    account_id: int, data: bytes, filename: str, caption: str = "", phone: str = "+5511999990000"
) -> int:
    """A customer's file arriving on a sandbox number (stored at once); the message id."""
    import tempfile
    from pathlib import Path

    from crm.media.services import Spooled
    from crm.whatsapp.models import WhatsAppAccount
    from crm.whatsapp.simulator import customer_sends_file

    account = db.session.get(WhatsAppAccount, account_id)
    assert account is not None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload"
        path.write_bytes(data)
        spool = Spooled(path, len(data), "", filename)
        _phone, message_id = customer_sends_file(account.workspace_id, account_id, phone, spool, caption)
    return message_id


def media_file(p: Person) -> int:
    """A customer's photo, stored and ready; its media id."""
    import io

    from PIL import Image

    from crm.inbox.models import Message

    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(out, "PNG")
    message = db.session.get(Message, inbound_file(sandbox_account(p), out.getvalue(), "foto.png"))
    assert message is not None and message.media_file_id is not None
    return message.media_file_id


def message(p: Person) -> int:
    """A customer's text message in a new conversation; its id."""
    from crm.inbox.models import Message

    conversation_id = conversation(p)
    found = db.session.scalar(select(Message.id).where(Message.conversation_id == conversation_id))
    assert found is not None
    return found


def lead(
    p: Person,
    phone: str = "+5511988887777",
    name: str = "Maria",
    *,
    opt_in: bool = False,
    tags: tuple[str, ...] = (),
    **fields: Any,
) -> int:
    """A lead of ``p``'s workspace, created through the leads service; its id."""
    from crm.leads.services import create_lead

    return create_lead(p.workspace_id, phone=phone, name=name, opt_in=opt_in, tags=tags, **fields).id


def lead_import(p: Person) -> int:
    """A CSV uploaded in ``p``'s workspace, its columns not confirmed yet (a draft); its id."""
    import io

    from crm.leads.imports import ImportOptions, create_import

    data = b"phone,name\r\n(11) 98888-7777,Maria\r\n"
    return create_import(
        p.workspace_id, p.user_id, io.BytesIO(data), "leads.csv", ImportOptions(), start=False
    ).id
