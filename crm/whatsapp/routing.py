"""Which number carries a message.

- A conversation sticks to the number the customer wrote to (or was first reached on).
- When that number can't send (logged out, blocked, disabled), its fallback carries the message,
  recorded on the message, so the thread stays one conversation.
- A lead with no conversation yet gets the preferred numbers (lowest ``priority``), split among
  equals by ``weight`` (a percentage split for a gradual move between providers). The choice is
  a stable hash of the lead, so retries and later messages pick the same number.
"""

from __future__ import annotations

import hashlib

from flask_babel import gettext as _
from sqlalchemy import select

from crm.errors import DomainError
from crm.extensions import db
from crm.whatsapp.models import WhatsAppAccount


class NoAccountAvailable(DomainError):
    status = 409
    code = "no_account"

    def default_message(self) -> str:
        return _("No WhatsApp number of this workspace can send right now.")


def usable_accounts(workspace_id: int) -> list[WhatsAppAccount]:
    accounts = db.session.scalars(
        select(WhatsAppAccount)
        .where(WhatsAppAccount.workspace_id == workspace_id, WhatsAppAccount.status == "active")
        .order_by(WhatsAppAccount.priority, WhatsAppAccount.id)
    )
    return [a for a in accounts if a.is_usable]


def _stable_fraction(lead_id: int) -> float:
    digest = hashlib.sha256(f"lead:{lead_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def account_for_new_lead(workspace_id: int, lead_id: int) -> WhatsAppAccount:
    candidates = usable_accounts(workspace_id)
    if not candidates:
        raise NoAccountAvailable()
    best = candidates[0].priority
    tier = [a for a in candidates if a.priority == best]
    total = sum(max(a.weight, 0) for a in tier)
    if total <= 0:
        return tier[0]
    point = _stable_fraction(lead_id) * total
    for account in tier:
        point -= max(account.weight, 0)
        if point < 0:
            return account
    return tier[-1]


def carrier_for(conversation_account: WhatsAppAccount) -> WhatsAppAccount | None:
    """The number that carries a message of a conversation on ``conversation_account`` now:
    itself when it can send, else the first usable number along its fallback chain."""
    seen: set[int] = set()
    account: WhatsAppAccount | None = conversation_account
    while account is not None and account.id not in seen:
        if account.is_usable:
            return account
        seen.add(account.id)
        account = (
            db.session.get(WhatsAppAccount, account.fallback_account_id)
            if account.fallback_account_id
            else None
        )
        if account is not None and account.workspace_id != conversation_account.workspace_id:
            return None  # never cross workspaces, whatever the row says
    return None
