"""A member writing first to a lead from the lead's page."""

from __future__ import annotations

from flask_babel import gettext as _

from crm.errors import ValidationFailed
from crm.leads.services import get_lead
from crm.whatsapp.outbox import Queued


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
    they already talk to carries it, else the workspace's routing picks one."""
    from crm.inbox.sending import send_to_phone  # not at import: the send pipeline imports the leads

    lead = get_lead(workspace_id, lead_id)
    if not lead.phone:
        raise ValidationFailed(
            _("This lead has no phone number: answer them from the inbox."), code="invalid_phone"
        )
    return send_to_phone(
        workspace_id,
        lead.phone,
        text,
        account_id=account_id,
        idempotency_key=idempotency_key,
        author="agent",
        user_id=user_id,
    )
