"""Cloud API message templates: synced from the number's WhatsApp Business Account, offered in
the composer when the 24-hour window is closed, filled in and sent through the outbox.

The inbox sends templates whose only variables are in the body (``{{1}}``… or ``{{name}}``);
templates that need a media header or button parameters are listed but not offered there.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import select

from crm.db import utcnow
from crm.errors import NotFound, ValidationFailed
from crm.extensions import db
from crm.tenancy import get_scoped, scoped
from crm.whatsapp.models import MessageTemplate, WhatsAppAccount

log = logging.getLogger(__name__)

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
MAX_PARAM = 1024


def _component(template: MessageTemplate, kind: str) -> dict[str, Any] | None:
    for component in template.components or []:
        if isinstance(component, dict) and str(component.get("type", "")).upper() == kind:
            return component
    return None


def body_text(template: MessageTemplate) -> str:
    body = _component(template, "BODY")
    return str(body.get("text", "")) if body else ""


def body_params(template: MessageTemplate) -> list[str]:
    """The body's placeholders in order of first appearance (``["1", "2"]`` or names)."""
    seen: list[str] = []
    for name in PLACEHOLDER.findall(body_text(template)):
        if name not in seen:
            seen.append(name)
    return seen


def sendable_from_inbox(template: MessageTemplate) -> bool:
    if template.status != "APPROVED":
        return False
    header = _component(template, "HEADER")
    if header and (
        str(header.get("format", "TEXT")).upper() != "TEXT" or PLACEHOLDER.search(header.get("text", ""))
    ):
        return False
    buttons = _component(template, "BUTTONS")
    for button in (buttons or {}).get("buttons", []) or []:
        if isinstance(button, dict) and PLACEHOLDER.search(str(button.get("url", ""))):
            return False
    return bool(_component(template, "BODY"))


def check_can_sync(account: WhatsAppAccount) -> str:
    """The number's WABA id, or a 422 saying what is missing."""
    waba_id = str((account.settings or {}).get("waba_id") or "")
    if account.provider != "cloud" or not waba_id:
        raise ValidationFailed(
            _("Templates come from the WhatsApp Business Account: enter its id (WABA id) first."),
            code="no_waba_id",
        )
    return waba_id


def sync_templates(account: WhatsAppAccount) -> int:
    """Replace the number's templates with its WABA's; how many there are now."""
    from crm.whatsapp.providers.cloud import CloudClient

    listed = CloudClient(account).list_templates(check_can_sync(account))
    now, kept = utcnow(), set()
    stored = {
        (row.name, row.language): row
        for row in db.session.scalars(select(MessageTemplate).where(MessageTemplate.account_id == account.id))
    }
    for item in listed:
        name, language = str(item.get("name", ""))[:512], str(item.get("language", ""))[:16]
        if not name or not language or (name, language) in kept:
            continue
        kept.add((name, language))
        row = stored.get((name, language))
        if row is None:
            row = MessageTemplate(
                workspace_id=account.workspace_id, account_id=account.id, name=name, language=language
            )
            db.session.add(row)
        row.category = str(item.get("category", ""))[:32]
        row.status = str(item.get("status", ""))[:32]
        row.parameter_format = str(item.get("parameter_format") or "POSITIONAL")[:16]
        components = item.get("components")
        row.components = components if isinstance(components, list) else []
        row.synced_at = now
    for key, row in stored.items():
        if key not in kept:
            db.session.delete(row)
    db.session.commit()
    log.info("account %s: %d message templates synced", account.id, len(kept))
    return len(kept)


def sync_all_templates() -> dict[int, int]:
    """Sync every active Cloud API number that has a WABA id; failures are logged, not raised."""
    from crm.whatsapp.providers.base import ProviderError

    done: dict[int, int] = {}
    for account in db.session.scalars(select(WhatsAppAccount).where(WhatsAppAccount.provider == "cloud")):
        if account.status != "active" or not (account.settings or {}).get("waba_id"):
            continue
        try:
            done[account.id] = sync_templates(account)
        except (ProviderError, ValidationFailed) as exc:
            db.session.rollback()
            log.warning("account %s: templates not synced: %s", account.id, exc)
        except Exception:  # one number's surprise must not stop the others' sync
            db.session.rollback()
            log.exception("account %s: templates not synced", account.id)
    return done


def list_templates(workspace_id: int, account_id: int) -> list[MessageTemplate]:
    stmt = scoped(select(MessageTemplate), MessageTemplate, workspace_id).where(
        MessageTemplate.account_id == account_id
    )
    return list(db.session.scalars(stmt.order_by(MessageTemplate.name, MessageTemplate.language)))


def sendable_templates(workspace_id: int, account_id: int) -> list[MessageTemplate]:
    return [t for t in list_templates(workspace_id, account_id) if sendable_from_inbox(t)]


@dataclass(frozen=True)
class FilledTemplate:
    text: str  # what the customer reads (shown in the thread)
    payload: dict[str, Any]  # name, language, components: what the Cloud API gets


def fill(template: MessageTemplate, values: dict[str, str]) -> FilledTemplate:
    """The template with every body placeholder filled; 422 when one is missing or too long."""
    if not sendable_from_inbox(template):
        raise ValidationFailed(_("This template can't be sent from the inbox."), code="template_not_sendable")
    params = body_params(template)
    filled: dict[str, str] = {}
    for name in params:
        value = " ".join(str(values.get(name, "")).split())
        if not value or len(value) > MAX_PARAM:
            raise ValidationFailed(
                _("Fill in every variable of the template (up to %(n)d characters each).", n=MAX_PARAM),
                code="invalid_template_params",
            )
        filled[name] = value
    text = PLACEHOLDER.sub(lambda m: filled.get(m.group(1), m.group(0)), body_text(template))
    payload: dict[str, Any] = {"name": template.name, "language": template.language}
    if params:
        named = template.parameter_format.upper() == "NAMED"
        parameters = [
            {"type": "text", "parameter_name": name, "text": filled[name]}
            if named
            else {"type": "text", "text": filled[name]}
            for name in params
        ]
        payload["components"] = [{"type": "body", "parameters": parameters}]
    return FilledTemplate(text=text, payload=payload)


def fields_context(workspace_id: int, template_id: int | None, account_id: int | None) -> dict[str, Any]:
    """What ``inbox/_template_fields.html`` shows of the template chosen in a picker for a number:
    its variables and text (nothing chosen: nothing). Another number's template is not found."""
    template = get_template(workspace_id, template_id) if template_id is not None else None
    if template is not None and template.account_id != account_id:
        raise NotFound()
    return {
        "template": template,
        "params": body_params(template) if template else [],
        "body": body_text(template) if template else "",
    }


def get_template(workspace_id: int, template_id: int) -> MessageTemplate:
    return get_scoped(MessageTemplate, workspace_id, template_id)
