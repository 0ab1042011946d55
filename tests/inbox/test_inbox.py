"""The inbox pages: list, thread, paging, replies, assignment, status, tenancy of live events."""

from __future__ import annotations

import io
import re
import threading
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from crm.db import utcnow
from crm.extensions import db
from crm.inbox import services as inbox
from crm.inbox.models import Conversation, Message
from crm.realtime.fragments import render_event
from tests import factories
from tests.conftest import csrf_from, hx, login


def test_inbox_lists_conversations_newest_first(logged_in: FlaskClient, owner: factories.Person) -> None:
    account_id = factories.sandbox_account(owner)
    factories.inbound(account_id, phone="+5511900000001", text="primeira", name="Ana")
    factories.inbound(account_id, phone="+5511900000002", text="segunda", name="Bia")
    html = logged_in.get("/").get_data(as_text=True)
    assert html.index("Bia") < html.index("Ana") and "segunda" in html


def test_opening_a_thread_marks_it_read_and_shows_messages(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    conversation_id = factories.inbound(factories.sandbox_account(owner), text="Oi")
    response = logged_in.get(f"/conversations/{conversation_id}", headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith(f'<div class="thread" id="thread-{conversation_id}"') and "Oi" in html
    conversation = db.session.get(Conversation, conversation_id)
    assert conversation is not None and conversation.unread_count == 0


def test_a_page_fetching_its_thread_again_marks_nothing_read(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    """After a reconnect or a resync the page fetches the open thread again (static/js/app.js):
    like a message pushed to an open thread, that is not the agent opening it."""
    conversation_id = factories.inbound(factories.sandbox_account(owner), text="Oi")
    headers = {"HX-Request": "true", "X-Zapdesk-Refetch": "1"}
    html = logged_in.get(f"/conversations/{conversation_id}", headers=headers).get_data(as_text=True)
    assert f'id="thread-{conversation_id}"' in html and "Oi" in html
    conversation = db.session.get(Conversation, conversation_id)
    assert conversation is not None and conversation.unread_count == 1


def test_going_back_to_a_thread_htmx_no_longer_has_gets_the_whole_page(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    """Conversations push their address; the Back button restores the page from htmx's cache,
    or when it is not there asks for it again, saying so: then the whole page, not the thread."""
    conversation_id = factories.inbound(factories.sandbox_account(owner), text="Oi")
    headers = {"HX-Request": "true", "HX-History-Restore-Request": "true"}
    html = logged_in.get(f"/conversations/{conversation_id}", headers=headers).get_data(as_text=True)
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert 'id="conversations"' in html and f'id="thread-{conversation_id}"' in html


def test_opening_an_unread_thread_clears_its_badge_in_every_open_list(
    app: Flask, logged_in: FlaskClient, owner: factories.Person
) -> None:
    from crm.realtime import broker

    conversation_id = factories.inbound(factories.sandbox_account(owner), text="Oi")
    heard: list[dict[str, object]] = []
    unsubscribe = broker.subscribe_local(
        lambda ws, event: heard.append(event) if ws == owner.workspace_id else None
    )
    try:
        logged_in.get(f"/conversations/{conversation_id}", headers={"HX-Request": "true"})
        logged_in.get(f"/conversations/{conversation_id}", headers={"HX-Request": "true"})  # read already
    finally:
        unsubscribe()
    updates = [e for e in heard if e["type"] == "conversation.updated"]
    assert [e["conversation_id"] for e in updates] == [conversation_id]  # once, when it was unread
    with app.test_request_context("/ws"):
        html = render_event(owner.workspace_id, updates[0], manager=False, user_id=owner.user_id)
    assert html and f'id="conversation-{conversation_id}"' in html and 'data-unread="0"' in html


def test_a_thread_address_loads_as_a_whole_page(logged_in: FlaskClient, owner: factories.Person) -> None:
    # The address bar shows /conversations/<id> after a click: a reload must show list and thread.
    conversation_id = factories.inbound(factories.sandbox_account(owner), text="Oi", name="Ana")
    response = logged_in.get(f"/conversations/{conversation_id}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'id="conversations"' in html and f'id="thread-{conversation_id}"' in html


def test_older_messages_page_by_keyset_even_with_equal_timestamps(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    conversation_id = factories.inbound(factories.sandbox_account(owner), text="m0")
    conversation = db.session.get(Conversation, conversation_id)
    assert conversation is not None
    same = utcnow() - timedelta(hours=1)
    for i in range(1, 120):
        factories.stored_message(conversation_id, f"m{i}", provider_message_id=f"same-{i}", created_at=same)
    seen: list[str] = []
    first = logged_in.get(f"/conversations/{conversation_id}", headers={"HX-Request": "true"}).get_data(
        as_text=True
    )
    seen += re.findall(r"<p>(m\d+)</p>", first)
    cursor = re.search(r'/older\?cursor=([^"&]+)', first)
    while cursor:
        page = logged_in.get(f"/conversations/{conversation_id}/older?cursor={cursor.group(1)}").get_data(
            as_text=True
        )
        seen += re.findall(r"<p>(m\d+)</p>", page)
        cursor = re.search(r'/older\?cursor=([^"&]+)', page)
    assert sorted(seen) == sorted(f"m{i}" for i in range(120))  # each message exactly once


def test_thread_pages_take_a_limit_of_up_to_100(logged_in: FlaskClient, owner: factories.Person) -> None:
    account_id = factories.sandbox_account(owner)
    conversation_id = factories.inbound(account_id, text="m0")
    for i in range(1, 130):
        factories.stored_message(conversation_id, f"m{i}", provider_message_id=f"n-{i}")
    for n in range(11):
        factories.inbound(account_id, phone=f"+55119200000{n:02d}", text="oi")
    path = f"/conversations/{conversation_id}"
    fragment = {"HX-Request": "true"}

    def texts(html: str) -> list[str]:
        return re.findall(r"<p>(m\d+)</p>", html)

    def older_link(html: str) -> str:
        found = re.search(r'hx-get="(/conversations/\d+/older\?[^"]+)"', html)
        assert found, "no link to older messages"
        return found.group(1).replace("&amp;", "&")

    usual = logged_in.get(path, headers=fragment).get_data(as_text=True)
    assert texts(usual) == [f"m{i}" for i in range(80, 130)] and "limit=" not in older_link(usual)
    first = logged_in.get(path, query_string={"limit": "100"}, headers=fragment).get_data(as_text=True)
    assert texts(first) == [f"m{i}" for i in range(30, 130)]  # the newest 100, the oldest at the top
    assert "limit=100" in older_link(first)  # the next page is as long
    rest = logged_in.get(older_link(first), headers=fragment).get_data(as_text=True)
    assert texts(rest) == [f"m{i}" for i in range(30)] and "/older?" not in rest
    cursor = older_link(usual).split("cursor=")[1]
    for bad in ("101", "0", "-1", "abc", "1e2"):
        assert logged_in.get(path, query_string={"limit": bad}, headers=fragment).status_code == 400, bad
        older = logged_in.get(f"{path}/older", query_string={"cursor": cursor, "limit": bad})
        assert older.status_code == 400, bad
    assert "limit must be a whole number from 1 to 100" in older.get_data(as_text=True)
    page = logged_in.get(path, query_string={"limit": "10"}).get_data(as_text=True)  # the whole page
    assert len(texts(page)) == 10 and page.count('class="conversation-item') == 12  # the list as usual


def test_reply_from_the_inbox_sends_once_per_form(logged_in: FlaskClient, owner: factories.Person) -> None:
    conversation_id = factories.inbound(factories.sandbox_account(owner))
    for _ in range(2):  # a double click posts the same form twice
        hx(logged_in, "POST", f"/conversations/{conversation_id}/messages", text="Olá!", send_key="form-1")
    sent = db.session.scalars(select(Message).where(Message.direction == "out")).all()
    assert len(sent) == 1 and sent[0].author == "agent" and sent[0].status == "delivered"


def test_one_form_posted_twice_at_the_same_moment_sends_once(
    app: Flask, logged_in: FlaskClient, owner: factories.Person
) -> None:
    """Two tabs' (or a double click's) requests of one form at the same moment: whether the second
    finds the first's message or loses the race on the key's unique index, one is sent."""
    from crm.whatsapp.models import Outbox

    conversation_id = factories.inbound(factories.sandbox_account(owner))
    other_tab = app.test_client()
    assert login(other_tab, owner.email).status_code == 302
    clients = [logged_in, other_tab]
    headers = [{"HX-Request": "true", "X-CSRFToken": csrf_from(c, "/")} for c in clients]
    barrier = threading.Barrier(2)
    answers: list[tuple[int, str]] = []

    def post(k: int) -> None:
        with app.app_context():  # the client commits the caller's session first: this thread's own
            barrier.wait(timeout=10)
            try:
                response = clients[k].post(
                    f"/conversations/{conversation_id}/messages",
                    data={"text": "Olá!", "send_key": "form-1"},
                    headers=headers[k],
                )
                answers.append((response.status_code, response.get_data(as_text=True)))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=post, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    db.session.expire_all()
    sent = db.session.scalars(select(Message).where(Message.direction == "out")).all()
    assert len(sent) == 1 and sent[0].text == "Olá!"
    assert db.session.scalar(select(func.count()).select_from(Outbox)) == 1
    assert [code for code, _ in answers] == [200, 200]  # both tabs get a fresh composer
    for _, html in answers:
        assert f'id="composer-{conversation_id}"' in html and 'value="form-1"' not in html  # a new key


def test_two_agents_taking_the_same_conversation(app: Flask, owner: factories.Person) -> None:
    second = factories.person("Acme", "b@acme.example")
    conversation_id = factories.inbound(factories.sandbox_account(owner))
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def take(user_id: int) -> None:
        with app.app_context():
            barrier.wait(timeout=10)
            try:
                inbox.take(owner.workspace_id, conversation_id, user_id)
                outcomes.append("won")
            except inbox.AlreadyAssigned:
                outcomes.append("lost")
            finally:
                db.session.remove()

    threads = [threading.Thread(target=take, args=(uid,)) for uid in (owner.user_id, second.user_id)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["lost", "won"]


def test_assign_and_close(logged_in: FlaskClient, owner: factories.Person) -> None:
    agent = factories.person("Acme", "agent@acme.example")
    outsider = factories.person("Other", "x@other.example")
    conversation_id = factories.inbound(factories.sandbox_account(owner))
    path = f"/conversations/{conversation_id}"
    assert hx(logged_in, "POST", f"{path}/assign", assignee_id=str(agent.user_id)) == 200
    assert hx(logged_in, "POST", f"{path}/assign", assignee_id=str(outsider.user_id)) == 422
    assert hx(logged_in, "POST", f"{path}/status", status="closed") == 200
    conversation = db.session.get(Conversation, conversation_id)
    assert (
        conversation is not None
        and conversation.assignee_id == agent.user_id
        and conversation.status == "closed"
    )
    assert f'id="conversation-{conversation_id}"' in logged_in.get("/?status=closed").get_data(as_text=True)
    assert f'id="conversation-{conversation_id}"' not in logged_in.get("/").get_data(as_text=True)
    header = logged_in.get(path).get_data(as_text=True)
    assert '{"status": "open"}' in header and re.search(r">\s*Reopen</button>", header)
    assert hx(logged_in, "POST", f"{path}/status", status="archived") == 422
    assert hx(logged_in, "POST", f"{path}/status", status="open") == 200  # reopened by hand
    db.session.refresh(conversation)
    assert conversation.status == "open" and conversation.assignee_id == agent.user_id
    assert f'id="conversation-{conversation_id}"' in logged_in.get("/").get_data(as_text=True)


def test_live_events_never_render_another_workspaces_data(app: Flask, owner: factories.Person) -> None:
    other = factories.person("Other", "o@other.example", role="owner")
    their_conversation = factories.conversation(other)
    message = db.session.scalar(select(Message).where(Message.conversation_id == their_conversation))
    assert message is not None
    with app.test_request_context("/ws"):
        event = {"type": "message.created", "message_id": message.id, "conversation_id": their_conversation}
        assert render_event(owner.workspace_id, event, manager=True, user_id=owner.user_id) is None
        assert render_event(other.workspace_id, event, manager=True, user_id=other.user_id)


def test_team_notes_are_internal(logged_in: FlaskClient, owner: factories.Person) -> None:
    from crm.inbox.models import ConversationNote

    conversation_id = factories.inbound(factories.sandbox_account(owner))
    assert (
        hx(logged_in, "POST", f"/conversations/{conversation_id}/notes", text="Cliente VIP, dar desconto")
        == 200
    )
    note = db.session.scalar(select(ConversationNote))
    assert note is not None and note.author_user_id == owner.user_id
    html = logged_in.get(f"/conversations/{conversation_id}", headers={"HX-Request": "true"}).get_data(
        as_text=True
    )
    assert "Cliente VIP, dar desconto" in html
    assert db.session.scalar(select(Message).where(Message.direction == "out")) is None  # never sent
    assert hx(logged_in, "POST", f"/conversations/{conversation_id}/notes", text="  ") == 422


def test_cloud_composer_follows_the_24_hour_window(logged_in: FlaskClient, owner: factories.Person) -> None:
    from crm.media.models import MediaFile

    conversation_id = factories.inbound(factories.cloud_account(owner), text="recent")
    fragment = {"HX-Request": "true"}
    open_thread = logged_in.get(f"/conversations/{conversation_id}", headers=fragment)
    assert "data-composer" in open_thread.get_data(as_text=True)
    message = db.session.scalar(select(Message).where(Message.conversation_id == conversation_id))
    assert message is not None
    send = f"/conversations/{conversation_id}/messages"
    headers = {"HX-Request": "true", "X-CSRFToken": csrf_from(logged_in, "/")}
    in_time = {"text": "Bom dia", "send_key": "k-0"}
    assert logged_in.post(send, data=in_time, headers=headers).status_code == 200
    message.created_at = utcnow() - timedelta(hours=25)
    db.session.commit()
    again = logged_in.post(send, data=in_time, headers=headers)
    assert again.status_code == 200  # a retry of a send queued in time: answered as that send
    assert db.session.scalar(select(func.count()).where(Message.direction == "out")) == 1
    closed = logged_in.get(f"/conversations/{conversation_id}", headers={"HX-Request": "true"}).get_data(
        as_text=True
    )
    assert "24-hour window is closed" in closed and "data-composer" not in closed
    # A tab opened before the window closed still shows the composer: what it sends is refused
    # (WhatsApp would answer 131047) and the templates take the composer's place.
    refused = logged_in.post(send, data={"text": "Oi de novo", "send_key": "k-1"}, headers=headers)
    html = refused.get_data(as_text=True)
    assert refused.status_code == 409 and "data-replaces-composer" in html
    assert "only accepts an approved template" in html and f'id="template-composer-{conversation_id}"' in html
    token = {"X-CSRFToken": headers["X-CSRFToken"]}
    as_page = logged_in.post(send, data={"text": "Oi de novo"}, headers=token)
    assert as_page.status_code == 409
    with_file = logged_in.post(
        send,
        data={"text": "", "file": (io.BytesIO(b"%PDF-1.4 x"), "pedido.pdf", "application/pdf")},
        headers=headers,
    )
    assert with_file.status_code == 409
    assert db.session.scalar(select(func.count()).where(Message.direction == "out")) == 1  # no more
    assert db.session.scalar(select(func.count()).select_from(MediaFile)) == 0  # the file not kept
    message.created_at = utcnow() - timedelta(hours=23, minutes=59)  # just inside
    db.session.commit()
    assert "data-composer" in logged_in.get(f"/conversations/{conversation_id}", headers=fragment).get_data(
        as_text=True
    )
    sandbox_thread = factories.inbound(factories.sandbox_account(owner), phone="+5511911112222")
    assert "data-composer" in logged_in.get(
        f"/conversations/{sandbox_thread}", headers={"HX-Request": "true"}
    ).get_data(as_text=True)


def test_group_messages_show_who_wrote_them(logged_in: FlaskClient, owner: factories.Person) -> None:
    from crm.whatsapp.events import InboundMessage
    from crm.whatsapp.inbound import ingest_message

    account_id = factories.sandbox_account(owner)
    message = InboundMessage(
        provider_message_id="group.1",
        type="text",
        text="Alguém tem o catálogo?",
        timestamp=utcnow(),
        phone="+5511911112222",
        name="Ana",
        group_jid="120363000000000009@g.us",
    )
    stored = ingest_message(account_id, message).stored[0]
    conversation_id = db.session.get(Message, stored).conversation_id  # type: ignore[union-attr]
    html = logged_in.get(f"/conversations/{conversation_id}").get_data(as_text=True)
    assert "WhatsApp group" in html
    assert '<small class="sender">Ana · +55 11 91111-2222</small>' in html
