"""One lead in the browser's terms: the page, the new and edit forms, consent, writing first,
moving to the trash and merging a duplicate."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from crm.extensions import db
from crm.inbox.models import Conversation, Message
from crm.leads.models import ConsentEvent, Lead
from crm.leads.trash import trash_leads
from crm.whatsapp.models import WhatsAppAccount
from tests import factories
from tests.conftest import csrf_from

HX = {"HX-Request": "true"}


def post(
    client: FlaskClient, path: str, headers: dict[str, str] | None = None, **form: object
) -> TestResponse:
    """A form post with the CSRF token the lead's page hands out."""
    token = csrf_from(client, "/leads/new")
    return client.post(path, data={"csrf_token": token, **form}, headers=headers or {})


def leads_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Lead)) or 0


def test_the_lead_page_shows_profile_conversations_and_history(
    logged_in: FlaskClient, owner: factories.Person, sandbox_account: WhatsAppAccount
) -> None:
    lead_id = factories.lead(
        owner,
        "+5511988887777",
        "Maria",
        opt_in=True,
        tags=("vip",),
        email="maria@example.com",
        notes="Prefers mornings",
        custom_fields={"Company": "Padaria Central"},
    )
    conversation_id = factories.inbound(sandbox_account.id, phone="+5511988887777", text="Oi")
    html = logged_in.get(f"/leads/{lead_id}").get_data(as_text=True)
    for shown in (
        "Maria",
        "+55 11 98888-7777",
        "maria@example.com",
        "Prefers mornings",
        "<dt>Company</dt>",
        "Padaria Central",
        "vip",
        "Added by hand",
        "Opted in",
        "In the app",
        f'href="/conversations/{conversation_id}"',  # into the inbox, at the conversation
        "Sandbox",
        "Last message",
        f'id="lead-consent-{lead_id}"',
        f'id="lead-conversations-{lead_id}"',
        f'href="/leads/{lead_id}/edit"',
    ):
        assert shown in html, shown


def test_opting_out_and_in_is_recorded_with_the_member(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    lead_id = factories.lead(owner, "+5511988887777", "Maria")
    fragment = post(logged_in, f"/leads/{lead_id}/consent", HX, opt_in="false").get_data(as_text=True)
    assert fragment.lstrip().startswith(f'<section class="card lead-consent" id="lead-consent-{lead_id}"')
    assert "Opted out" in fragment and owner.email in fragment and "In the app" in fragment
    assert 'value="true"' in fragment and 'value="false"' not in fragment  # now only "Opt in"
    # The "write to them" form on the same page follows: it says why nothing can be sent.
    assert f'id="lead-conversations-{lead_id}" data-swap-errors hx-swap-oob="true"' in fragment
    assert "They opted out: nothing can be sent to them until they opt in again." in fragment
    response = post(logged_in, f"/leads/{lead_id}/consent", opt_in="true")
    assert response.status_code == 303
    events = db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)).all()
    assert [(e.opted_in, e.source, e.user_id) for e in events] == [
        (False, "form", owner.user_id),
        (True, "form", owner.user_id),
    ]
    assert post(logged_in, f"/leads/{lead_id}/consent", opt_in="maybe").status_code == 400
    assert len(db.session.scalars(select(ConsentEvent)).all()) == 2


def test_only_a_manager_opts_back_in_someone_who_said_stop(
    agent: FlaskClient, owner: factories.Person
) -> None:
    said_stop = factories.lead(owner, "+5511988887777", "Maria")
    never_asked = factories.lead(owner, "+5511988886666", "Joana")
    assert post(agent, f"/leads/{said_stop}/consent", opt_in="false").status_code == 303
    page = agent.get(f"/leads/{said_stop}").get_data(as_text=True)
    assert 'name="opt_in" value="true"' not in page
    assert post(agent, f"/leads/{said_stop}/consent", opt_in="true").status_code == 403
    assert post(agent, f"/leads/{never_asked}/consent", opt_in="true").status_code == 303
    lead = db.session.get(Lead, said_stop)
    assert lead is not None and lead.opted_out_at is not None and not lead.opt_in


def test_a_new_lead_from_the_form(logged_in: FlaskClient, owner: factories.Person) -> None:
    page = logged_in.get("/leads/new").get_data(as_text=True)
    assert "read as a number of BR" in page and 'name="field_name"' in page
    response = post(
        logged_in,
        "/leads/new",
        phone="(11) 98765-4321",
        name="  Ana   Souza ",
        email="ana@example.com",
        tags="vip, Atacado, VIP",
        notes="Met at the fair",
        field_name=["Company", "", "Plan"],
        field_value=["Padaria", "", "Gold"],
        opt_in="y",
    )
    assert response.status_code == 303
    lead = db.session.scalar(select(Lead))
    assert lead is not None and response.headers["Location"] == f"/leads/{lead.id}"
    assert (lead.phone, lead.name, lead.email) == ("+5511987654321", "Ana Souza", "ana@example.com")
    assert lead.tag_names == ["Atacado", "vip"] and lead.custom_fields == {
        "Company": "Padaria",
        "Plan": "Gold",
    }
    assert lead.opt_in and lead.source == "manual"
    event = db.session.scalar(select(ConsentEvent))
    assert event is not None and (event.source, event.user_id) == ("form", owner.user_id)


def test_bad_input_in_the_form_shows_errors_and_changes_nothing(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    for form, status, message in [
        ({"phone": ""}, 400, "Enter the phone number."),
        ({"phone": "12"}, 422, "This is not a phone number: 12"),
        ({"phone": "11987654321", "email": "not-an-email"}, 422, "Enter a valid email address."),
        ({"phone": "11987654321", "tags": "x" * 65}, 422, "A tag can have at most 64 characters."),
        (
            {"phone": "11987654321", "field_name": "", "field_value": "orphan"},
            422,
            "Give each custom field a name.",
        ),
        ({"phone": "11987654321", "field_name": ["Plan", "plan"], "field_value": ["a", "b"]}, 422, "called"),
        ({"phone": "11987654321", "name": "Ana\x00"}, 422, "NUL"),
    ]:
        response = post(logged_in, "/leads/new", **form)
        html = response.get_data(as_text=True)
        assert response.status_code == status, (form, response.status_code)
        assert message in html, (form, message)
        assert 'class="field-error"' in html
    assert leads_count() == 0
    kept = post(logged_in, "/leads/new", phone="12", name="Ana", field_name="Plan", field_value="Gold")
    html = kept.get_data(as_text=True)
    assert 'value="Ana"' in html and 'value="Plan"' in html and 'value="Gold"' in html  # what was typed stays


def test_a_duplicate_phone_links_to_the_lead_or_offers_the_restore(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    existing = factories.lead(owner, "+5511987654321", "Ana")
    response = post(logged_in, "/leads/new", phone="(11) 98765-4321", name="Ana again")
    html = response.get_data(as_text=True)
    assert response.status_code == 409
    assert (
        "A lead with this phone already exists." in html and f'href="/leads/{existing}">Open Ana</a>' in html
    )
    trash_leads(owner.workspace_id, [existing])
    html = post(logged_in, "/leads/new", phone="11987654321").get_data(as_text=True)
    assert "in the trash" in html and 'formaction="/leads/trash/restore"' in html
    assert f'name="lead_id" value="{existing}"' in html
    restored = post(
        logged_in, "/leads/trash/restore", phone="11987654321", open="lead", lead_id=str(existing)
    )
    assert restored.headers["Location"] == f"/leads/{existing}"
    assert db.session.get(Lead, existing).deleted_at is None  # type: ignore[union-attr]
    assert leads_count() == 1


def test_an_agent_is_told_to_ask_for_the_restore(agent: FlaskClient, owner: factories.Person) -> None:
    trash_leads(owner.workspace_id, [factories.lead(owner, "+5511987654321", "Ana")])
    html = post(agent, "/leads/new", phone="11987654321").get_data(as_text=True)
    assert "Ask an owner or admin to restore them" in html and "formaction" not in html


def test_editing_a_lead(logged_in: FlaskClient, owner: factories.Person) -> None:
    lead_id = factories.lead(
        owner, "+5511987654321", "Ana", tags=("vip",), custom_fields={"Company": "Padaria", "Plan": "Gold"}
    )
    form = logged_in.get(f"/leads/{lead_id}/edit").get_data(as_text=True)
    assert 'value="+55 11 98765-4321"' in form and 'value="vip"' in form
    assert 'value="Company"' in form and 'value="Padaria"' in form
    response = post(
        logged_in,
        f"/leads/{lead_id}/edit",
        phone="+55 11 98765-4321",
        name="Ana Souza",
        email="",
        tags="vip, wholesale",
        notes="",
        field_name=["Company", "Plan", "City"],
        field_value=["Padaria Nova", "", "Santos"],  # Plan cleared: removed
    )
    assert response.status_code == 303
    lead = db.session.get(Lead, lead_id)
    assert lead is not None and lead.name == "Ana Souza" and lead.tag_names == ["vip", "wholesale"]
    assert lead.custom_fields == {"Company": "Padaria Nova", "City": "Santos"}


def test_a_bad_or_taken_phone_in_an_edit_changes_nothing(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    lead_id = factories.lead(owner, "+5511987654321", "Ana", custom_fields={"Plan": "Gold"})
    other = factories.lead(owner, "+5511911112222", "Bia")
    for phone, status, message in [
        ("abc", 422, "This is not a phone number"),
        ("(11) 91111-2222", 409, "A lead with this phone already exists."),
        ("", 400, "Enter the phone number."),
    ]:
        response = post(
            logged_in,
            f"/leads/{lead_id}/edit",
            phone=phone,
            name="Changed",
            field_name="Plan",
            field_value="",
        )
        html = response.get_data(as_text=True)
        assert response.status_code == status and message in html, phone
        if status == 409:
            assert f'href="/leads/{other}">Open Bia</a>' in html
    lead = db.session.get(Lead, lead_id)
    assert lead is not None and (lead.phone, lead.name, lead.custom_fields) == (
        "+5511987654321",
        "Ana",
        {"Plan": "Gold"},
    )


def test_writing_first_from_the_lead_page(
    logged_in: FlaskClient, owner: factories.Person, sandbox_account: WhatsAppAccount
) -> None:
    lead_id = factories.lead(owner, "+5511987654321", "Ana")
    html = logged_in.get(f"/leads/{lead_id}").get_data(as_text=True)
    assert f'action="/leads/{lead_id}/messages"' in html and "No conversation yet." in html
    response = post(logged_in, f"/leads/{lead_id}/messages", HX, text="Olá Ana!", send_key="k1")
    fragment = response.get_data(as_text=True)
    assert response.status_code == 200
    assert fragment.lstrip().startswith(f'<section class="card" id="lead-conversations-{lead_id}"')
    conversation = db.session.scalar(select(Conversation).where(Conversation.lead_id == lead_id))
    assert conversation is not None and f'href="/conversations/{conversation.id}"' in fragment
    assert "Message queued." in fragment
    message = db.session.scalar(select(Message).where(Message.conversation_id == conversation.id))
    assert message is not None and (message.text, message.author, message.author_user_id) == (
        "Olá Ana!",
        "agent",
        owner.user_id,
    )
    again = post(logged_in, f"/leads/{lead_id}/messages", text="Olá Ana!", send_key="k1")  # a double submit
    assert again.headers["Location"] == f"/conversations/{conversation.id}"
    assert db.session.scalar(select(func.count()).select_from(Message)) == 1


def test_an_opted_out_lead_gets_the_409_in_the_form(
    logged_in: FlaskClient, owner: factories.Person, sandbox_account: WhatsAppAccount
) -> None:
    lead_id = factories.lead(owner, "+5511987654321", "Ana")
    post(logged_in, f"/leads/{lead_id}/consent", opt_in="false")
    for headers in (HX, {}):
        response = post(logged_in, f"/leads/{lead_id}/messages", headers, text="Promo!")
        html = response.get_data(as_text=True)
        assert response.status_code == 409
        assert "This lead opted out" in html and "data-swap-errors" in html and ">Promo!</textarea>" in html
    assert db.session.scalar(select(func.count()).select_from(Message)) == 0


def test_writing_first_without_a_number_or_text_is_explained(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    lead_id = factories.lead(owner, "+5511987654321", "Ana")
    assert "Connect a WhatsApp number" in logged_in.get(f"/leads/{lead_id}").get_data(as_text=True)
    response = post(logged_in, f"/leads/{lead_id}/messages", HX, text="Oi")
    assert response.status_code == 409
    assert "No WhatsApp number" in response.get_data(as_text=True)
    factories.sandbox_account(owner, "Loja")
    factories.sandbox_account(owner, "Suporte")
    html = logged_in.get(f"/leads/{lead_id}").get_data(as_text=True)
    assert 'name="account_id"' in html and "Loja" in html and "Suporte" in html  # several: pick one
    response = post(logged_in, f"/leads/{lead_id}/messages", HX, text="   ")
    assert response.status_code == 422 and "Write the message text." in response.get_data(as_text=True)


def test_moving_a_lead_to_the_trash(logged_in: FlaskClient, owner: factories.Person) -> None:
    lead_id = factories.lead(owner, "+5511987654321", "Ana")
    response = post(logged_in, f"/leads/{lead_id}/trash")
    assert response.status_code == 303 and response.headers["Location"] == "/leads/"
    assert "restored for 30 days" in logged_in.get("/leads/").get_data(as_text=True)
    assert logged_in.get(f"/leads/{lead_id}").status_code == 404


def test_merging_a_duplicate(logged_in: FlaskClient, owner: factories.Person) -> None:
    keep = factories.lead(owner, "+5511987654321", "Ana", tags=("vip",))
    other = factories.lead(owner, "+551187654321", "", tags=("atacado",), email="ana@example.com")
    page = logged_in.get(f"/leads/{keep}").get_data(as_text=True)
    assert f'id="duplicate-{other}"' in page and f'href="/leads/{keep}/merge?other_id={other}"' in page
    confirm = logged_in.get(f"/leads/{keep}/merge?other_id={other}").get_data(as_text=True)
    assert "deleted for good" in confirm and f'name="other_id" value="{other}"' in confirm
    assert db.session.get(Lead, other) is not None  # the confirmation page changes nothing
    response = post(logged_in, f"/leads/{keep}/merge", other_id=str(other))
    assert response.status_code == 303 and response.headers["Location"] == f"/leads/{keep}"
    merged = db.session.get(Lead, keep)
    assert merged is not None and merged.tag_names == ["atacado", "vip"] and merged.email == "ana@example.com"
    assert db.session.get(Lead, other) is None
    assert post(logged_in, f"/leads/{keep}/merge").status_code == 400
    assert post(logged_in, f"/leads/{keep}/merge", other_id=str(keep)).status_code == 422


def test_only_managers_merge(agent: FlaskClient, owner: factories.Person) -> None:
    keep = factories.lead(owner, "+5511987654321", "Ana")
    other = factories.lead(owner, "+551187654321", "Ana velha")
    page = agent.get(f"/leads/{keep}").get_data(as_text=True)
    assert f'id="duplicate-{other}"' in page and "/merge" not in page and "/trash" not in page
    assert agent.get(f"/leads/{keep}/merge?other_id={other}").status_code == 403
    assert post(agent, f"/leads/{keep}/merge", other_id=str(other)).status_code == 403
    assert db.session.get(Lead, other) is not None


def test_merging_with_another_workspaces_lead_is_404(logged_in: FlaskClient, owner: factories.Person) -> None:
    keep = factories.lead(owner, "+5511987654321", "Ana")
    theirs = factories.lead(factories.person("Other", "o@other.example", role="owner"), "+551187654321")
    assert logged_in.get(f"/leads/{keep}/merge?other_id={theirs}").status_code == 404
    assert post(logged_in, f"/leads/{keep}/merge", other_id=str(theirs)).status_code == 404
    assert db.session.get(Lead, theirs) is not None


def test_a_lead_known_only_by_whatsapp_id_can_be_edited_without_a_phone(
    logged_in: FlaskClient, owner: factories.Person
) -> None:
    from crm.leads.services import insert_lead_if_new

    lead_id = insert_lead_if_new(owner.workspace_id, None, "BR.1234567890", "Zé")
    db.session.commit()
    html = logged_in.get(f"/leads/{lead_id}").get_data(as_text=True)
    assert "This lead has no phone number" in html
    response = post(logged_in, f"/leads/{lead_id}/edit", phone="", name="José")
    assert response.status_code == 303
    assert db.session.get(Lead, lead_id).name == "José"  # type: ignore[union-attr,arg-type]
