"""The broadcasts pages in the browser's terms: who may compose and steer a broadcast, the compose
form (errors on their fields, nothing created), the live audience count and preview, the progress
page with its recipients and CSV export, and another workspace's broadcast answering 404."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from html import unescape
from typing import Any

import pytest
import time_machine
from flask.testing import FlaskClient
from sqlalchemy import func, select

from crm.broadcasts.models import Broadcast, BroadcastRecipient
from crm.broadcasts.services import Draft, create_broadcast, pause_broadcast
from crm.extensions import db
from crm.media.models import MediaFile
from tests import factories
from tests.broadcasts.conftest import add_leads, drive
from tests.conftest import csrf_from, login
from tests.sockets import ServerSocket, registered

ROW = re.compile(r'<tr id="recipient-(\d+)" class="recipient-row">')
MORE = re.compile(r'<tr id="recipient-more"[^>]*hx-get="([^"]+)"')


def text_of(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def broadcasts() -> int:
    return db.session.scalar(select(func.count()).select_from(Broadcast)) or 0


def compose(client: FlaskClient, **fields: Any) -> Any:
    """Post the compose form as the page sends it (values as lists where the page has several)."""
    data: dict[str, Any] = {
        "csrf_token": csrf_from(client, "/broadcasts/new"),
        "name": "Promo",
        "kind": "text",
        "variant": ["Oi {{first_name|cliente}}!"],
        "audience": "leads",
        "tags": "vip",
        "when": "now",
        **fields,
    }
    return client.post("/broadcasts/new", data=data, content_type="multipart/form-data")


@pytest.fixture
def noon() -> Iterator[Any]:
    """Midday in São Paulo (15:00 UTC), standing still until the test moves it: sending hours
    from 08:00 keep a broadcast waiting, and the estimates are the same on every run."""
    with time_machine.travel(datetime(2026, 12, 2, 15, 0, tzinfo=UTC), tick=False) as traveller:
        yield traveller


@pytest.fixture
def agent_client(client: FlaskClient, owner: factories.Person) -> FlaskClient:
    agent = factories.person(workspace="Acme", email="agent@acme.example", role="agent")
    assert login(client, agent.email).status_code == 302
    return client


def start(person: factories.Person, account_id: int, **draft: Any) -> int:
    values: dict[str, Any] = {
        "name": "Promo",
        "variants": ["Oi {{name}}"],
        "account_ids": [account_id],
        **draft,
    }
    return create_broadcast(person.workspace_id, Draft(**values)).id


# --- roles ------------------------------------------------------------------------------------


def test_an_agent_follows_broadcasts_but_cannot_compose_steer_or_export(
    agent_client: FlaskClient, owner: factories.Person
) -> None:
    account = factories.sandbox_account(owner)
    add_leads(owner, 2, tags=("vip",))
    broadcast_id = start(owner, account, tags=["vip"])
    listing = agent_client.get("/broadcasts/")
    assert listing.status_code == 200
    html = listing.get_data(as_text=True)
    assert "Promo" in html and 'href="/broadcasts/new"' not in html
    page = agent_client.get(f"/broadcasts/{broadcast_id}")
    assert page.status_code == 200
    assert f'id="broadcast-progress-{broadcast_id}"' in page.get_data(as_text=True)
    assert agent_client.get("/broadcasts/new").status_code == 403
    assert agent_client.get("/broadcasts/new/audience?tags=vip").status_code == 403
    assert agent_client.get(f"/broadcasts/{broadcast_id}/export.csv").status_code == 403
    token = csrf_from(agent_client, "/broadcasts/")
    assert agent_client.post("/broadcasts/new", data={"csrf_token": token, "name": "x"}).status_code == 403
    for action in ("pause", "resume", "cancel"):
        response = agent_client.post(
            f"/broadcasts/{broadcast_id}/{action}", headers={"HX-Request": "true", "X-CSRFToken": token}
        )
        assert response.status_code == 403, action
    assert db.session.get(Broadcast, broadcast_id).status == "running"  # untouched
    assert broadcasts() == 1


def test_another_workspaces_broadcast_is_not_found(logged_in: FlaskClient, owner: factories.Person) -> None:
    other = factories.person(workspace="Other", email="boss@other.example", role="owner")
    add_leads(other, 1, tags=("vip",))
    theirs = start(other, factories.sandbox_account(other), tags=["vip"])
    token = csrf_from(logged_in, "/broadcasts/")
    for path in ("", "/live", "/row", "/recipients", "/export.csv"):
        assert logged_in.get(f"/broadcasts/{theirs}{path}").status_code == 404, path
    for action in ("pause", "resume", "cancel"):
        response = logged_in.post(f"/broadcasts/{theirs}/{action}", headers={"X-CSRFToken": token})
        assert response.status_code == 404, action
    assert "Promo" not in logged_in.get("/broadcasts/").get_data(as_text=True)


# --- composing --------------------------------------------------------------------------------


def test_the_compose_page_offers_the_workspaces_numbers_tags_and_variables(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    first = factories.sandbox_account(owner, "Loja")
    second = factories.sandbox_account(owner, "Vendas")
    factories.lead(
        owner, "+5511988887777", "Maria", opt_in=True, tags=("VIP",), custom_fields={"Empresa": "Padaria"}
    )
    html = logged_in.get("/broadcasts/new").get_data(as_text=True)
    for account in (first, second):  # every number ticked by default
        assert re.search(rf'name="account_id" value="{account}"[^>]*checked', html)
    assert '<option value="VIP">' in html
    for variable in ("{{name}}", "{{first_name}}", "{{phone}}", "{{email}}", "{{Empresa}}"):
        assert f'data-insert-variable="{variable}"' in html
    assert 'id="kind-template" disabled' in html  # sandbox numbers: no templates
    assert 'id="broadcast-preview"' in html and 'id="audience-count"' in html


def test_a_broadcast_composed_in_the_form_starts_and_opens_its_progress(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    account = factories.sandbox_account(owner)
    add_leads(owner, 3, tags=("vip",))
    add_leads(owner, 2, tags=("vip", "cliente"), start=10)
    add_leads(owner, 2, start=20)
    response = compose(
        logged_in,
        variant=["Oi {{first_name}}", "Olá {{first_name}}", ""],
        exclude_tags="cliente",
        account_id=[str(account)],
        send_from="08:00",
        send_until="20:00",
    )
    assert response.status_code == 303, text_of(response.get_data(as_text=True))[:500]
    broadcast = db.session.scalars(select(Broadcast)).one()
    assert response.headers["Location"].endswith(f"/broadcasts/{broadcast.id}")
    assert broadcast.recipients_count == 3
    assert broadcast.variants == ["Oi {{first_name}}", "Olá {{first_name}}"]
    assert broadcast.audience["exclude_tags"] == ["cliente"]
    assert (broadcast.send_from, broadcast.send_until) == ("08:00", "20:00")
    page = logged_in.get(response.headers["Location"]).get_data(as_text=True)
    assert "Broadcast started: 3 recipients." in text_of(page)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"name": "  "}, "name", "Give the broadcast a name."),
        ({"variant": ["Olá {{}}"]}, "variants", "names no variable"),
        ({"variant": ["Olá {{name"]}, "variants", "A variable is not closed"),
        ({"variant": [""]}, "variants", "Write the message text."),
        ({"tags": "nobody-has-this"}, "audience", "No opted-in lead matches this audience"),
        ({"exclude_days": "abc"}, "exclude_days", "whole number"),
        ({"exclude_days": "0"}, "exclude_days", "1 to 3650 days"),
        ({"send_from": "08:00"}, "hours", "Sending hours need a start and an end"),
        ({"when": "later", "scheduled_at": "2020-01-01T10:00"}, "schedule", "That time has passed"),
        ({"when": "later", "scheduled_at": "soon"}, "schedule", "Choose the day and time"),
        ({"kind": "template", "template": "promo|pt_BR"}, "template", "Cloud API numbers only"),
        ({"account_id": []}, "numbers", "Choose at least one number"),
        ({"account_id": ["999999"]}, "numbers", "No number with id 999999"),
        ({"audience": "groups"}, "groups", "Choose at least one group."),
    ],
)
def test_bad_input_is_shown_on_the_form_and_creates_nothing(
    logged_in: FlaskClient, owner: factories.Person, fields: dict[str, Any], field: str, message: str
) -> None:
    account = factories.sandbox_account(owner)
    add_leads(owner, 2, tags=("vip",))
    response = compose(logged_in, **{"account_id": [str(account)], **fields})
    assert response.status_code in (409, 422), response.status_code
    html = response.get_data(as_text=True)
    assert message in unescape(html)
    assert 'id="broadcast-form"' in html  # the form again, with what was typed
    assert 'value="vip"' in html or fields.get("audience") == "groups"
    assert broadcasts() == 0
    assert db.session.scalar(select(func.count()).select_from(BroadcastRecipient)) == 0


def test_several_things_left_out_are_all_named_at_once(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    factories.sandbox_account(owner)
    response = compose(logged_in, name="", variant=[""], account_id=[])
    text = text_of(response.get_data(as_text=True))
    assert response.status_code == 422
    for message in ("Give the broadcast a name.", "Write the message text.", "Choose at least one number"):
        assert message in text
    assert broadcasts() == 0


def test_a_photo_goes_with_the_broadcast_and_audio_is_refused(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    from PIL import Image

    account = factories.sandbox_account(owner)
    add_leads(owner, 1, tags=("vip",))
    photo = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 160, 120)).save(photo, "JPEG")
    refused = compose(
        logged_in,
        account_id=[str(account)],
        file=(io.BytesIO(b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x00" * 64), "a.mp3"),
    )
    assert refused.status_code in (413, 415, 422)
    assert broadcasts() == 0 and db.session.scalar(select(func.count()).select_from(MediaFile)) == 0
    photo.seek(0)
    bad_name = compose(
        logged_in, name="", account_id=[str(account)], file=(io.BytesIO(photo.getvalue()), "f.jpg")
    )
    assert bad_name.status_code == 422 and "Choose the file again" in unescape(
        bad_name.get_data(as_text=True)
    )
    assert db.session.scalar(select(func.count()).select_from(MediaFile)) == 0
    response = compose(
        logged_in, account_id=[str(account)], file=(io.BytesIO(photo.getvalue()), "oferta.jpg")
    )
    assert response.status_code == 303, text_of(response.get_data(as_text=True))[:400]
    broadcast = db.session.scalars(select(Broadcast)).one()
    media = db.session.get(MediaFile, broadcast.media_file_id)
    assert media is not None and media.kind == "image" and media.workspace_id == owner.workspace_id


# --- the live parts of the form ---------------------------------------------------------------


def test_the_live_count_follows_the_audience_as_it_is_typed(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    factories.sandbox_account(owner)
    add_leads(owner, 3, tags=("vip",))
    add_leads(owner, 2, tags=("vip", "cliente"), start=10)
    add_leads(owner, 4, tags=("vip",), opt_in=False, start=20)  # never opted in: never counted

    def count(query: str) -> str:
        response = logged_in.get(f"/broadcasts/new/audience?{query}", headers={"HX-Request": "true"})
        assert response.status_code == 200
        return text_of(response.get_data(as_text=True))

    assert count("audience=leads&tags=vip") == "Goes to 5 opted-in leads"
    assert count("audience=leads&tags=VIP&exclude_tags=cliente") == "Goes to 3 opted-in leads"
    assert count("audience=leads&tags=vip,cliente") == "Goes to 2 opted-in leads"
    assert count("audience=leads&tags=") == "Goes to 5 opted-in leads"  # no tag: every opted-in lead
    assert count("audience=leads&tags=nobody") == "No opted-in lead matches: nobody would get it."
    assert count("audience=leads&tags=vip&exclude_days=x") == "Write the number of days as a whole number."
    assert count("audience=groups&group_id=1&group_id=2") == "2 groups"


def test_the_preview_shows_the_first_text_for_the_first_lead_as_whatsapp_formats_it(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    factories.sandbox_account(owner)
    factories.lead(owner, "+5511988887777", "Maria Souza", opt_in=True, tags=("vip",))
    query = "audience=leads&tags=vip&variant=*Oi* {{first_name|cliente}} <b>!&variant=Segunda"
    html = logged_in.get(f"/broadcasts/new/preview?{query}", headers={"HX-Request": "true"}).get_data(
        as_text=True
    )
    assert "<strong>Oi</strong> Maria &lt;b&gt;!" in html  # formatted, and escaped
    assert "As Maria Souza will see it." in text_of(html)
    assert "The first of 2 variants" in text_of(html)
    nobody = logged_in.get("/broadcasts/new/preview?tags=none&variant=Oi {{first_name|cliente}}").get_data(
        as_text=True
    )
    assert "Oi cliente" in nobody and "variables show their fallbacks" in nobody
    broken = logged_in.get("/broadcasts/new/preview?variant=Oi {{}}").get_data(as_text=True)
    assert "names no variable" in unescape(broken)


# --- the progress page ------------------------------------------------------------------------


def test_the_progress_page_counts_lists_filters_and_pages_the_recipients(
    noon: Any, logged_in: FlaskClient, owner: factories.Person
) -> None:
    from crm.leads.consent import ConsentChange, set_consent
    from crm.leads.models import ConsentSource

    account = factories.sandbox_account(owner)
    ids = add_leads(owner, 5, tags=("vip",))
    broadcast_id = start(owner, account, tags=["vip"], send_from="08:00", send_until="09:00")  # 12:00 here
    set_consent(owner.workspace_id, [ids[0]], False, ConsentChange(ConsentSource.KEYWORD, detail="SAIR"))
    html = logged_in.get(f"/broadcasts/{broadcast_id}").get_data(as_text=True)
    progress = html[html.index(f'id="broadcast-progress-{broadcast_id}"') :].split("</section>")[0]
    assert "0 of 5 sent" in text_of(progress)
    assert re.search(r'id="broadcast-\d+-queued">.*?<dd>5</dd>', progress, re.S)
    assert "Estimated finish" in text_of(progress) and "from 08:00 until 09:00" in text_of(progress)
    assert f"&broadcast={broadcast_id}" in html  # the websocket says which broadcast it shows

    noon.shift(21 * 3600)  # 09:00 UTC: 06:00 in São Paulo, still outside the hours
    noon.shift(2 * 3600)  # 08:00 there: it sends
    assert drive(broadcast_id, noon).status == "done"
    assert login(logged_in, owner.email).status_code == 302  # a day later: signed in again
    html = logged_in.get(f"/broadcasts/{broadcast_id}").get_data(as_text=True)
    assert "4 of 5 sent" in text_of(html)
    assert ROW.findall(html) and len(ROW.findall(html)) == 5
    skipped = logged_in.get(f"/broadcasts/{broadcast_id}?status=skipped", headers={"HX-Request": "true"})
    body = skipped.get_data(as_text=True)
    assert body.startswith('<section id="broadcast-recipients"') and len(ROW.findall(body)) == 1
    assert "Opted out" in text_of(body) and "Lead 0" in body
    first = logged_in.get(f"/broadcasts/{broadcast_id}?status=delivered&limit=3").get_data(as_text=True)
    more = MORE.search(first)
    assert more and len(ROW.findall(first)) == 3
    rest = logged_in.get(unescape(more.group(1))).get_data(as_text=True)
    assert len(ROW.findall(rest)) == 1 and not MORE.search(rest)
    assert set(ROW.findall(first)).isdisjoint(ROW.findall(rest))


def test_pause_resume_and_cancel_answer_with_the_new_state(
    noon: Any, logged_in: FlaskClient, owner: factories.Person
) -> None:
    account = factories.sandbox_account(owner)
    add_leads(owner, 3, tags=("vip",))
    broadcast_id = start(owner, account, tags=["vip"], send_from="08:00", send_until="09:00")
    headers = {"HX-Request": "true", "X-CSRFToken": csrf_from(logged_in, "/broadcasts/")}
    paused = logged_in.post(f"/broadcasts/{broadcast_id}/pause", headers=headers).get_data(as_text=True)
    assert f'id="broadcast-state-{broadcast_id}"' in paused and 'hx-swap-oob="true"' in paused
    assert "Resume continues with only the unsent recipients" in paused
    assert db.session.get(Broadcast, broadcast_id).status == "paused"
    resumed = logged_in.post(f"/broadcasts/{broadcast_id}/resume", headers=headers).get_data(as_text=True)
    assert "Pause" in text_of(resumed) and db.session.get(Broadcast, broadcast_id).status == "running"
    plain = logged_in.post(f"/broadcasts/{broadcast_id}/cancel", data={"csrf_token": headers["X-CSRFToken"]})
    assert plain.status_code == 303 and db.session.get(Broadcast, broadcast_id).status == "cancelled"
    again = logged_in.post(f"/broadcasts/{broadcast_id}/pause", headers=headers)
    assert again.status_code == 200 and "it can't be changed" in unescape(again.get_data(as_text=True))


def test_an_automatic_pause_shows_why(noon: Any, logged_in: FlaskClient, owner: factories.Person) -> None:
    account = factories.sandbox_account(owner)
    add_leads(owner, 2, tags=("vip",))
    broadcast_id = start(owner, account, tags=["vip"], send_from="08:00", send_until="08:01")
    pause_broadcast(owner.workspace_id, broadcast_id, reason="The number Loja is logged out: session ended")
    text = text_of(logged_in.get(f"/broadcasts/{broadcast_id}").get_data(as_text=True))
    assert "Paused automatically: The number Loja is logged out: session ended" in text
    assert "Resume continues with only the unsent recipients" in text


def test_the_results_export_neutralises_formulas(logged_in: FlaskClient, owner: factories.Person) -> None:
    account = factories.sandbox_account(owner)
    factories.lead(owner, "+5511988887777", '=HYPERLINK("http://evil")', opt_in=True, tags=("vip",))
    factories.lead(owner, "+5511988887778", "Ana", opt_in=True, tags=("vip",))
    broadcast_id = start(owner, account, tags=["vip"])
    response = logged_in.get(f"/broadcasts/{broadcast_id}/export.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert f"broadcast-{broadcast_id}-promo.csv" in response.headers["Content-Disposition"]
    body = response.get_data(as_text=True)
    assert body.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(body.lstrip("\ufeff"))))
    assert rows[0] == ["name", "phone", "number", "status", "error_code", "error", "variant", "time"]
    by_phone = {row[1]: row for row in rows[1:]}
    assert by_phone["+5511988887777"][0] == '\'=HYPERLINK("http://evil")'
    assert by_phone["+5511988887778"][:4] == ["Ana", "+5511988887778", "Sandbox", "delivered"]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-03:00$", by_phone["+5511988887778"][7])


def test_the_list_shows_each_broadcast_newest_first_with_its_progress(
    noon: Any, logged_in: FlaskClient, owner: factories.Person
) -> None:
    account = factories.sandbox_account(owner)
    add_leads(owner, 2, tags=("vip",))
    first = start(owner, account, name="Primeira", tags=["vip"])
    assert drive(first, noon).status == "done"
    second = start(owner, account, name="Segunda", tags=["vip"], send_from="08:00", send_until="08:01")
    html = logged_in.get("/broadcasts/").get_data(as_text=True)
    assert html.index(f'id="broadcast-row-{second}"') < html.index(f'id="broadcast-row-{first}"')
    done_row = html[html.index(f'id="broadcast-row-{first}"') :].split("</tr>")[0]
    assert "2 of 2 sent" in text_of(done_row) and "Completed" in done_row and "hx-trigger" not in done_row
    running_row = html[html.index(f'id="broadcast-row-{second}"') :].split("</tr>")[0]
    assert "0 of 2 sent" in text_of(running_row) and 'hx-trigger="every 5s"' in running_row
    assert 'href="/broadcasts/new"' in html
    page = logged_in.get("/broadcasts/?limit=1").get_data(as_text=True)
    assert f'id="broadcast-row-{second}"' in page and 'id="broadcast-more"' in page


# --- live updates -----------------------------------------------------------------------------


def test_progress_reaches_only_the_tabs_showing_that_broadcast_read_once_per_event(
    noon: Any, app: Any, owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm.broadcasts import progress as progress_module
    from crm.realtime import fanout
    from crm.realtime.tab import Tab

    account = factories.sandbox_account(owner)
    add_leads(owner, 3, tags=("vip",))
    watched = start(owner, account, tags=["vip"], send_from="08:00", send_until="08:01")
    other = start(owner, account, name="Outra", tags=["vip"], send_from="08:00", send_until="08:01")
    reads: list[int] = []
    real = progress_module.snapshot

    def counting(workspace_id: int, broadcast_id: int) -> Any:
        reads.append(broadcast_id)
        return real(workspace_id, broadcast_id)

    monkeypatch.setattr(progress_module, "snapshot", counting)
    sockets = [ServerSocket() for _ in range(5)]
    slow: list[dict[str, Any]] = []

    def tab(n: int, locale: str = "en", shows: int | None = watched) -> Tab:
        ws = sockets[n]
        return Tab(owner.workspace_id, locale, ws, slow.append, inbox=False, broadcast_id=shows, plain=True)

    inbox = Tab(owner.workspace_id, "en", sockets[4], slow=slow.append, plain=True)
    tabs = [tab(0), tab(1, "pt_BR"), tab(2), tab(3, shows=other), inbox]
    with registered(app, *tabs):
        event = {"type": "broadcast.progress", "broadcast_id": watched, "eid": "p1"}
        assert fanout.deliver(app, owner.workspace_id, event) == 3
        assert reads == [watched]  # one reading for two languages and three tabs
        texts = [ws.texts(wait=0.2) for ws in sockets]
        english = texts[0][0]
        assert f'id="broadcast-progress-{watched}"' in english and 'hx-swap-oob="true"' in english
        assert f"broadcast-state-{watched}" not in english  # a tick leaves the buttons alone
        assert texts[2] == [english] and texts[1] and texts[1][0] != english
        assert texts[3] == [] and texts[4] == [] and slow == []
        changed = {"type": "broadcast.changed", "broadcast_id": watched, "status": "paused", "eid": "c1"}
        assert fanout.deliver(app, owner.workspace_id, changed) == 3
        state = sockets[0].texts(wait=0.2)[1]
        assert f'id="broadcast-state-{watched}"' in state
        assert "csrf" not in state.lower()  # one rendering for everyone: no per-user token


def test_a_tick_is_queued_for_the_fan_out_only_when_a_tab_here_shows_that_broadcast(
    app: Any, owner: factories.Person
) -> None:
    from crm.realtime import fanout
    from crm.realtime.tab import Tab

    socket = ServerSocket()
    slow: list[dict[str, Any]] = []
    inbox_tab = Tab(owner.workspace_id, "en", socket, slow=slow.append)
    with registered(app, inbox_tab):
        with fanout._lock:
            before = fanout._events.qsize()
        fanout._listener(owner.workspace_id, {"type": "broadcast.progress", "broadcast_id": 7})
        assert fanout._events.qsize() == before and slow == []  # nobody watches broadcast 7


def test_progress_pushes_are_coalesced_to_one_a_second_per_broadcast_and_the_last_is_kept() -> None:
    from crm.realtime.fanout import Coalescer

    gate = Coalescer(1.0)
    tick = {"type": "broadcast.progress", "broadcast_id": 1}
    assert gate.offer(1, {**tick, "eid": "a"}, 10.0)  # the first goes at once
    assert not gate.offer(1, {**tick, "eid": "b"}, 10.3)  # held
    assert not gate.offer(1, {**tick, "eid": "c"}, 10.6)  # replaces the held one
    assert gate.offer(1, {"type": "broadcast.progress", "broadcast_id": 2, "eid": "x"}, 10.6)  # another one
    assert gate.next_due() == pytest.approx(11.0)
    assert gate.due(10.9) == []
    assert [e["eid"] for _w, e in gate.due(11.0)] == ["c"]  # the latest numbers, never dropped
    assert gate.next_due() is None
    assert not gate.offer(1, {**tick, "eid": "d"}, 11.5)
    # A status change goes at once and makes the held tick unnecessary.
    assert gate.offer(1, {"type": "broadcast.changed", "broadcast_id": 1, "eid": "e"}, 11.6)
    assert gate.due(20.0) == []


def test_the_socket_watches_only_its_own_workspaces_broadcast(app: Any, owner: factories.Person) -> None:
    from crm.realtime.ws import _watched_broadcast

    other = factories.person(workspace="Other", email="boss@other.example", role="owner")
    add_leads(other, 1, tags=("vip",))
    theirs = start(other, factories.sandbox_account(other), tags=["vip"])
    add_leads(owner, 1, tags=("vip",), start=10)
    mine = start(owner, factories.sandbox_account(owner), tags=["vip"])
    assert _watched_broadcast(owner.workspace_id, "broadcasts.detail", str(mine)) == mine
    assert _watched_broadcast(owner.workspace_id, "broadcasts.detail", str(theirs)) is None
    assert _watched_broadcast(owner.workspace_id, "inbox.index", str(mine)) is None
    assert _watched_broadcast(owner.workspace_id, "broadcasts.detail", "x") is None


# --- the estimated finish ---------------------------------------------------------------------


def test_the_estimate_counts_only_the_sending_hours_and_a_webqr_numbers_daily_cap() -> None:
    from zoneinfo import ZoneInfo

    from crm.broadcasts.eta import DAY, between, finish_time, intersect, outside

    zone = ZoneInfo("America/Sao_Paulo")
    noon = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)  # 12:00 in São Paulo
    assert finish_time(600, 10.0, noon, zone, [(0, DAY)]) == datetime(2026, 12, 2, 15, 1, tzinfo=UTC)
    # From 08:00 until 09:00 only: 12:00 is past it, so tomorrow at 08:00 (11:00 UTC) plus a minute.
    hours = between("08:00", "09:00")
    assert finish_time(600, 10.0, noon, zone, hours) == datetime(2026, 12, 3, 11, 1, tzinfo=UTC)
    # Hours that cross midnight, and quiet hours taken out of them.
    assert between("22:00", "02:00") == [(0, 120), (1320, DAY)]
    assert intersect([(0, DAY)], outside("21:00", "08:00")) == [(480, 1260)]
    # 300 a day at most: 700 messages take three days whatever the rate.
    done = finish_time(700, 100.0, noon, zone, [(0, DAY)], lambda _day, _midnight: 300)
    assert done is not None and done.astimezone(zone).date().isoformat() == "2026-12-04"
    assert finish_time(10, 1.0, noon, zone, [(0, DAY)], lambda _day, _midnight: 0) is None  # never


def test_the_progress_page_estimates_from_the_numbers_pace(
    noon: Any, logged_in: FlaskClient, owner: factories.Person
) -> None:
    from crm.whatsapp.accounts import create_account

    account = create_account(owner.workspace_id, provider="webqr", name="Celular")
    account.health = "connected"  # paired (a new WebQR number waits for its QR code)
    db.session.commit()
    webqr = account.id
    add_leads(owner, 30, tags=("vip",))
    broadcast_id = start(owner, webqr, tags=["vip"], send_from="08:00", send_until="20:00")
    text = text_of(logged_in.get(f"/broadcasts/{broadcast_id}").get_data(as_text=True))
    # WebQR: a random 4 to 12 s gap between sends (8 s on average) beats its 10 a minute: 30 x 8 s.
    assert "Estimated finish: 12/2/26, 12:04 PM" in text
    assert (
        "Celular (WhatsApp Web) sends at most 300 messages a day and stays quiet from 21:00 until 08:00"
        in text
    )


# --- templates and groups ---------------------------------------------------------------------


def test_a_template_is_offered_for_cloud_numbers_with_a_field_per_parameter(
    logged_in: FlaskClient, owner: factories.Person, cloud_account: Any, graph_api: Any
) -> None:
    from crm.whatsapp import templates

    graph_api.add_template("promo", "Olá {{1}}, use o cupom {{2}}.")
    graph_api.add_template("pendente", "Oi {{1}}", status="PENDING")
    templates.sync_templates(cloud_account)
    sandbox = factories.sandbox_account(owner)
    add_leads(owner, 2, tags=("vip",))
    both = f"account_id={cloud_account.id}&account_id={sandbox}"
    mixed = logged_in.get(f"/broadcasts/new/template?{both}&kind=template").get_data(as_text=True)
    assert 'id="kind-template" disabled' in mixed and 'id="kind-text" checked' in mixed
    only_cloud = f"account_id={cloud_account.id}&kind=template"
    offered = logged_in.get(f"/broadcasts/new/template?{only_cloud}").get_data(as_text=True)
    assert '<option value="promo|pt_BR"' in offered and "pendente" not in offered
    chosen = logged_in.get(f"/broadcasts/new/template?{only_cloud}&template=promo|pt_BR&param-1=Ana")
    html = chosen.get_data(as_text=True)
    assert 'name="param-1" value="Ana"' in html and 'name="param-2" value=""' in html
    assert "Olá {{1}}, use o cupom {{2}}." in html
    preview = logged_in.get(
        f"/broadcasts/new/preview?{only_cloud}&tags=vip&template=promo|pt_BR&param-1={{{{first_name}}}}&param-2=NATAL"
    ).get_data(as_text=True)
    assert "Olá Lead, use o cupom NATAL." in preview

    missing = compose(
        logged_in, kind="template", template="promo|pt_BR", **{"param-1": "{{first_name}}"},
        account_id=[str(cloud_account.id)],
    )  # fmt: skip
    assert missing.status_code == 422 and "Fill in every variable of the template" in missing.get_data(
        as_text=True
    )
    assert broadcasts() == 0
    response = compose(
        logged_in, kind="template", template="promo|pt_BR", account_id=[str(cloud_account.id)],
        **{"param-1": "{{first_name|cliente}}", "param-2": "NATAL10"},
    )  # fmt: skip
    assert response.status_code == 303
    broadcast = db.session.scalars(select(Broadcast)).one()
    assert (broadcast.template_name, broadcast.template_language) == ("promo", "pt_BR")
    assert broadcast.template_values == {"1": "{{first_name|cliente}}", "2": "NATAL10"}
    assert broadcast.variants == []


def test_a_broadcast_to_whatsapp_groups_goes_from_the_number_in_them(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    from crm.whatsapp.accounts import create_account
    from crm.whatsapp.models import WhatsAppGroup

    account = create_account(owner.workspace_id, provider="webqr", name="Celular")
    account.health = "connected"
    groups = [
        WhatsAppGroup(workspace_id=owner.workspace_id, account_id=account.id, jid=f"1203630{i}@g.us",
                      name=name, participants=40 + i)
        for i, name in enumerate(["Clientes VIP", "Promoções"])
    ]  # fmt: skip
    db.session.add_all(groups)
    db.session.commit()
    page = logged_in.get("/broadcasts/new").get_data(as_text=True)
    assert (
        "Clientes VIP" in page and "40 participants" in page and 'id="audience-groups" data-audience' in page
    )
    response = compose(logged_in, audience="groups", group_id=[str(groups[1].id)], tags="")
    assert response.status_code == 303, text_of(response.get_data(as_text=True))[:300]
    broadcast = db.session.scalars(select(Broadcast)).one()
    assert broadcast.audience == {"groups": [groups[1].id]} and broadcast.recipients_count == 1
    text = text_of(logged_in.get(response.headers["Location"]).get_data(as_text=True))
    assert "Groups Promoções" in text
