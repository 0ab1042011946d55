"""Every model, imported once so metadata (and Alembic) sees the whole schema."""

from crm.ai.models import AICacheEntry, AICall, AIReply, AISettings, AISuggestion
from crm.archiving.models import ArchivedConversation, ArchivedMedia, MessageArchive
from crm.auth.models import ApiToken, Invitation, LoginFailure, Membership, Role, User, UserSession, Workspace
from crm.broadcasts.models import Broadcast, BroadcastAccount, BroadcastRecipient
from crm.inbox.models import Conversation, ConversationNote, Message
from crm.leads.models import Lead, LeadTag
from crm.media.models import MediaFile, MediaStatus
from crm.ops.heartbeat import Heartbeat
from crm.ops.metrics import MetricCounter
from crm.ops.recent_errors import LogRecordRow
from crm.whatsapp.models import (
    AccountEvent,
    Health,
    Outbox,
    OutboxState,
    ParkedStatus,
    Provider,
    WebQRSession,
    WebQRState,
    WhatsAppAccount,
    WhatsAppGroup,
)

__all__ = [
    "AICacheEntry",
    "AICall",
    "AIReply",
    "AISettings",
    "AISuggestion",
    "AccountEvent",
    "ApiToken",
    "ArchivedConversation",
    "ArchivedMedia",
    "Broadcast",
    "BroadcastAccount",
    "BroadcastRecipient",
    "Conversation",
    "ConversationNote",
    "Health",
    "Heartbeat",
    "Invitation",
    "Lead",
    "LeadTag",
    "LogRecordRow",
    "LoginFailure",
    "MediaFile",
    "MediaStatus",
    "Membership",
    "Message",
    "MessageArchive",
    "MetricCounter",
    "Outbox",
    "OutboxState",
    "ParkedStatus",
    "Provider",
    "Role",
    "User",
    "UserSession",
    "WebQRSession",
    "WebQRState",
    "WhatsAppAccount",
    "WhatsAppGroup",
    "Workspace",
]
