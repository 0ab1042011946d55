"""A member writing first to a lead from the lead's page.

On a Cloud API number, WhatsApp takes free text only within 24 hours of the customer's last
message; before that (a lead who was imported or never wrote on that number) only an approved
template goes through, so the page offers the number's templates instead of a text box, and
refuses text there rather than queueing a message WhatsApp would refuse (131047).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import gettext as _

from crm.errors import Conflict, ValidationFailed
from crm.leads.models import Lead
from crm.leads.services import get_lead
from crm.whatsapp.models import MessageTemplate, WhatsAppAccount
from crm.whatsapp.outbox import Queued


class WindowClosed(Conflict):
    code = "window_closed"

    def default_message(self) -> str:
        return _(
            "They have not written on this number in the last 24 hours, so WhatsApp only accepts "
            "an approved template: choose one."
        )


@dataclass(frozen=True)
class FirstMessage:
    """How the lead's page can write to them on a number."""

    account: WhatsAppAccount | None  # the number that carries it (None: no number can)
    templates: list[MessageTemplate] | None  # not None: outside the 24-hour window, templates only


def first_message(workspace_id: int, lead: Lead, account_id: int | None = None) -> FirstMessage:
    from crm.inbox.sending import carrying_number
    from crm.inbox.services import window_closed_to_lead
    from crm.whatsapp.routing import NoAccountAvailable
    from crm.whatsapp.templates import sendable_templates

    try:
        account = carrying_number(workspace_id, lead.id, account_id)
    except NoAccountAvailable:  # no number can send: the page says so when they try
        return FirstMessage(None, None)
    if not window_closed_to_lead(workspace_id, lead.id, account):
        return FirstMessage(account, None)
    return FirstMessage(account, sendable_templates(workspace_id, account.id))


def _writable(workspace_id: int, lead_id: int) -> Lead:
    from crm.leads.consent import phone_opted_out
    from crm.whatsapp.outbox import OptedOut

    lead = get_lead(workspace_id, lead_id)
    if not lead.phone:
        raise ValidationFailed(
            _("This lead has no phone number: answer them from the inbox."), code="invalid_phone"
        )
    if phone_opted_out(workspace_id, lead.phone):
        raise OptedOut()
    return lead


def start_conversation(
    workspace_id: int,
    lead_id: int,
    text: object,
    *,
    user_id: int,
    account_id: int | None = None,
    idempotency_key: str | None = None,
) -> Queued:
    """Send ``text`` to the lead's phone as an agent's message, through the same path as the API's
    send (the outbox refuses a lead who opted out with a 409). Without ``account_id`` the number
    they already talk to carries it, else the workspace's routing picks one. Outside a Cloud API
    number's 24-hour window: ``WindowClosed``, nothing queued."""
    from crm.inbox.sending import carrying_number, send_to_phone  # not at import: the pipeline imports leads
    from crm.inbox.services import window_closed_to_lead

    lead = _writable(workspace_id, lead_id)
    account = carrying_number(workspace_id, lead.id, account_id)
    if window_closed_to_lead(workspace_id, lead.id, account):
        raise WindowClosed()
    return send_to_phone(
        workspace_id,
        lead.phone,
        text,
        account_id=account.id,
        idempotency_key=idempotency_key,
        author="agent",
        user_id=user_id,
    )


def start_with_template(
    workspace_id: int,
    lead_id: int,
    template_id: int | None,
    values: dict[str, str],
    *,
    user_id: int,
    account_id: int | None = None,
    idempotency_key: str | None = None,
) -> Queued:
    """An approved template to the lead, in their conversation on the number (created for it)."""
    from crm.inbox.sending import carrying_number, checked_template, send_template
    from crm.inbox.services import conversation_for
    from crm.whatsapp.templates import fill

    lead = _writable(workspace_id, lead_id)
    account = carrying_number(workspace_id, lead.id, account_id)
    fill(checked_template(workspace_id, template_id, account.id), values)  # before the conversation
    conversation = conversation_for(workspace_id, account.id, lead.id)
    return send_template(
        workspace_id, conversation.id, template_id, values, user_id=user_id, idempotency_key=idempotency_key
    )
