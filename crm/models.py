"""Every model, imported once so metadata (and Alembic) sees the whole schema."""

from crm.auth.models import ApiToken, Invitation, LoginFailure, Membership, Role, User, UserSession, Workspace
from crm.inbox.models import Conversation, Message
from crm.leads.models import Lead
from crm.whatsapp.models import Provider, WhatsAppAccount

__all__ = [
    "ApiToken",
    "Conversation",
    "Invitation",
    "Lead",
    "LoginFailure",
    "Membership",
    "Message",
    "Provider",
    "Role",
    "User",
    "UserSession",
    "WhatsAppAccount",
    "Workspace",
]
