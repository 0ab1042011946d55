"""REST API v1 (see CONTRACT.md): thin views over the domain services."""

from __future__ import annotations

from typing import Any

from flask import g, request
from flask_babel import gettext as _

from crm.api import bp
from crm.errors import DomainError, ValidationFailed
from crm.extensions import db
from crm.inbox import listing
from crm.inbox import services as inbox
from crm.inbox.sending import reply, send_to_phone
from crm.leads import services as leads
from crm.leads.consent import ConsentChange
from crm.leads.export import csv_download, export_csv
from crm.leads.models import ConsentSource, LeadSource
from crm.leads.search import LeadFilter, Sort
from crm.leads.search import list_leads as list_matching
from crm.leads.trash import trash_leads
from crm.params import json_body, page_limit, parse_bool, parse_id
from crm.settings.services import get_workspace
from crm.whatsapp.accounts import account_json, list_accounts


def _page(items: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    return {"data": items, "next_cursor": next_cursor}


def _bool_arg(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    value = parse_bool(raw)
    if value is not None:
        return value
    raise DomainError(_("%(name)s must be true or false.", name=name), code="invalid_parameter")


@bp.get("/workspace")
def workspace() -> Any:
    """Who the token is: its workspace and defaults (handy to check a token works)."""
    ws = get_workspace(g.workspace_id)
    return {"id": ws.id, "name": ws.name, "country": ws.country, "timezone": ws.timezone, "locale": ws.locale}


@bp.get("/accounts")
def accounts() -> Any:
    return {"data": [account_json(a) for a in list_accounts(g.workspace_id)], "next_cursor": None}


@bp.get("/conversations")
def conversations() -> Any:
    page = listing.list_conversations(g.workspace_id, page_limit(), request.args.get("cursor"))
    return _page([inbox.conversation_json(c) for c in page.items], page.next_cursor)


@bp.patch("/conversations/<int:conversation_id>")
def update_conversation(conversation_id: int) -> Any:
    inbox.get_conversation(g.workspace_id, conversation_id)
    body = json_body()
    if "ai_enabled" not in body:
        raise ValidationFailed(_("Nothing to change: send ai_enabled."), code="invalid_body")
    if not isinstance(body["ai_enabled"], bool):
        raise ValidationFailed(_("ai_enabled must be true or false."), code="invalid_body")
    conversation = inbox.set_ai_enabled(g.workspace_id, conversation_id, body["ai_enabled"])
    return inbox.conversation_json(conversation)


@bp.get("/conversations/<int:conversation_id>/messages")
def conversation_messages(conversation_id: int) -> Any:
    page = inbox.list_messages(g.workspace_id, conversation_id, page_limit(), request.args.get("cursor"))
    return _page([inbox.message_json(m) for m in page.items], page.next_cursor)


@bp.post("/conversations/<int:conversation_id>/messages")
def reply_in_conversation(conversation_id: int) -> Any:
    """JSON ``{"text"}``, or multipart with ``file`` (and optional ``text`` as its caption)."""
    inbox.get_conversation(g.workspace_id, conversation_id)
    if request.mimetype == "multipart/form-data":
        from crm.inbox.sending import reply_with_file

        upload = request.files.get("file")
        if upload is None or not upload.filename:
            raise ValidationFailed(_("Send the file in the 'file' field."), code="invalid_file")
        queued = reply_with_file(
            g.workspace_id,
            conversation_id,
            upload,
            request.form.get("text"),
            user_id=g.api_token.user_id,
            idempotency_key=request.form.get("idempotency_key"),
        )
        return _queued(queued.message.id, queued.message.conversation_id)
    body = json_body()
    queued = reply(
        g.workspace_id,
        conversation_id,
        body.get("text"),
        user_id=g.api_token.user_id,
        idempotency_key=body.get("idempotency_key"),
    )
    return _queued(queued.message.id, queued.message.conversation_id)


@bp.post("/messages")
def send_message() -> Any:
    body = json_body()
    raw_account = body.get("account_id")  # JSON numbers only: "1" is a mistake worth reporting
    account_id = parse_id(raw_account) if isinstance(raw_account, int) else None
    if raw_account is not None and account_id is None:
        raise ValidationFailed(_("account_id must be a number."), code="invalid_account")
    queued = send_to_phone(
        g.workspace_id,
        body.get("to"),
        body.get("text"),
        account_id=account_id,
        idempotency_key=body.get("idempotency_key"),
        user_id=g.api_token.user_id,
    )
    return _queued(queued.message.id, queued.message.conversation_id)


def _queued(message_id: int, conversation_id: int) -> tuple[dict[str, Any], int]:
    # Accepted for delivery; its progress shows in the conversation's messages.
    return {"id": message_id, "status": "queued", "conversation_id": conversation_id}, 202


@bp.get("/leads")
def list_leads() -> Any:
    filters = LeadFilter(
        q=request.args.get("q", ""), tag=request.args.get("tag", ""), opt_in=_bool_arg("opt_in")
    )
    page = list_matching(g.workspace_id, filters, Sort.NEWEST, page_limit(), request.args.get("cursor"))
    return _page([leads.lead_json(lead) for lead in page.items], page.next_cursor)


def _api_consent() -> ConsentChange:
    return ConsentChange(ConsentSource.API, user_id=g.api_token.user_id, detail=g.api_token.name)


def _text_or_none(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ValidationFailed(_("%(name)s must be text.", name=name), code="invalid_body")
    return value


def _lead_fields(body: dict[str, Any]) -> leads.LeadChanges:
    opt_in, tags, fields = body.get("opt_in"), body.get("tags"), body.get("custom_fields")
    if opt_in is not None and not isinstance(opt_in, bool):
        raise ValidationFailed(_("opt_in must be true or false."), code="invalid_body")
    if tags is not None and not isinstance(tags, list):
        raise ValidationFailed(_("tags must be a list of text."), code="invalid_tags")
    return leads.LeadChanges(
        phone=_text_or_none(body, "phone"),
        name=_text_or_none(body, "name"),
        email=_text_or_none(body, "email"),
        notes=_text_or_none(body, "notes"),
        opt_in=opt_in,
        tags=tags,
        custom_fields=fields,
    )


@bp.post("/leads")
def create_lead() -> Any:
    body = json_body()
    if not isinstance(body.get("phone"), str):
        raise ValidationFailed(_("phone is required, as text."), code="invalid_phone")
    fields = _lead_fields(body)
    lead = leads.create_lead(
        g.workspace_id,
        phone=body["phone"],
        name=fields.name or "",
        email=fields.email,
        notes=fields.notes or "",
        opt_in=bool(fields.opt_in),
        tags=fields.tags or [],
        custom_fields=fields.custom_fields,
        source=LeadSource.API,
        consent=_api_consent(),
    )
    db.session.refresh(lead)
    return leads.lead_json(lead), 201


@bp.get("/leads/export")
def export_leads() -> Any:
    filters = LeadFilter(
        q=request.args.get("q", ""), tag=request.args.get("tag", ""), opt_in=_bool_arg("opt_in")
    )
    workspace_id = g.workspace_id
    return csv_download(lambda: export_csv(workspace_id, filters), "leads.csv")


@bp.get("/leads/<int:lead_id>")
def lead_detail(lead_id: int) -> Any:
    return leads.lead_json(leads.get_lead(g.workspace_id, lead_id))


@bp.patch("/leads/<int:lead_id>")
def update_lead(lead_id: int) -> Any:
    lead = leads.update_lead(g.workspace_id, lead_id, _lead_fields(json_body()), _api_consent())
    db.session.refresh(lead)
    return leads.lead_json(lead)


@bp.delete("/leads/<int:lead_id>")
def delete_lead(lead_id: int) -> Any:
    """To the trash (restorable for the workspace's trash days)."""
    leads.get_lead(g.workspace_id, lead_id)
    trash_leads(g.workspace_id, [lead_id])
    return "", 204


@bp.get("/whatsapp/groups")
def whatsapp_groups() -> Any:
    from crm.whatsapp.webqr import group_json, list_groups

    raw = request.args.get("account_id") or None
    account_id = parse_id(raw)
    if raw is not None and account_id is None:
        raise DomainError(_("account_id must be a number."), code="invalid_account")
    groups = list_groups(g.workspace_id, account_id)
    return {"data": [group_json(group) for group in groups], "next_cursor": None}


@bp.get("/media/<int:media_id>")
def media_file(media_id: int) -> Any:
    """A message's file (``media.url`` in the messages list)."""
    from crm.media.views import serve_media

    return serve_media(g.workspace_id, media_id)
