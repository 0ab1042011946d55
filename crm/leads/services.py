"""Leads: create, find and list, with phones in E.164 and case-insensitive tags."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from email_validator import EmailNotValidError, validate_email
from flask_babel import gettext as _
from sqlalchemy import ColumnElement, Select, Table, and_, exists, func, or_, select
from sqlalchemy.exc import IntegrityError

from crm.auth.models import Workspace
from crm.db import LIKE_ESCAPE, insert_ignoring_conflicts, like_escaped, utcnow
from crm.errors import Conflict, NotFound, ValidationFailed
from crm.extensions import db
from crm.leads.models import Lead, LeadTag
from crm.leads.phones import maybe_e164, to_e164
from crm.tenancy import get_scoped, scoped
from crm.textcheck import check_clean_text

MAX_TAG_LENGTH = 64


def clean_tags(tags: Iterable[Any]) -> list[str]:
    """Trimmed, de-duplicated case-insensitively, first spelling kept."""
    seen: dict[str, str] = {}
    for raw in tags:
        if not isinstance(raw, str):
            raise ValidationFailed(_("Tags must be text."), code="invalid_tags")
        name = " ".join(check_clean_text(raw, code="invalid_tags").split())
        if not name:
            continue
        if len(name) > MAX_TAG_LENGTH:
            raise ValidationFailed(
                _("A tag can have at most %(n)d characters.", n=MAX_TAG_LENGTH), code="invalid_tags"
            )
        seen.setdefault(name.casefold(), name)
    return list(seen.values())


def set_tags(lead: Lead, tags: list[str]) -> None:
    wanted = {t.casefold(): t for t in tags}
    for tag in list(lead.tags):
        if tag.key not in wanted:
            lead.tags.remove(tag)
    have = {t.key for t in lead.tags}
    for key, name in wanted.items():
        if key not in have:
            lead.tags.append(LeadTag(workspace_id=lead.workspace_id, name=name, key=key))


def _check_email(email: str | None) -> str | None:
    if email is None or email.strip() == "":
        return None
    check_clean_text(email, code="invalid_email")
    try:
        return validate_email(
            email.strip(), check_deliverability=False, globally_deliverable=False
        ).normalized
    except EmailNotValidError as exc:
        raise ValidationFailed(_("Enter a valid email address."), code="invalid_email") from exc


def workspace_country(workspace_id: int) -> str:
    workspace = db.session.get(Workspace, workspace_id)
    return workspace.country if workspace else "BR"


def create_lead(
    workspace_id: int,
    *,
    phone: str,
    name: str = "",
    email: str | None = None,
    opt_in: bool = False,
    tags: Iterable[Any] = (),
) -> Lead:
    """A new lead; the phone must parse (workspace country by default) and be new in the workspace."""
    e164 = to_e164(phone, workspace_country(workspace_id))
    clean_email = _check_email(email)
    tag_names = clean_tags(tags)
    if len(name) > 200:
        raise ValidationFailed(_("The name is too long."), code="invalid_name")
    check_clean_text(name, code="invalid_name")
    now = utcnow()
    lead = Lead(
        workspace_id=workspace_id,
        phone=e164,
        name=name.strip(),
        email=clean_email,
        opt_in=opt_in,
        opted_in_at=now if opt_in else None,
    )
    db.session.add(lead)
    set_tags(lead, tag_names)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(_("A lead with this phone already exists."), code="duplicate_lead") from None
    return lead


def insert_lead_if_new(
    workspace_id: int, phone: str | None, bsuid: str | None, name: str | None, kind: str = "person"
) -> int | None:
    """Create a lead (or a group's stand-in); its id, or None when the phone or business-scoped
    id is already taken."""
    now = utcnow()
    leads = cast(Table, Lead.__table__)
    inserted = db.session.connection().execute(
        insert_ignoring_conflicts(leads)
        .values(
            workspace_id=workspace_id,
            phone=phone,
            bsuid=bsuid,
            name=(name or "")[:200],
            kind=kind,
            notes="",
            opt_in=False,
            created_at=now,
            updated_at=now,
        )
        .returning(leads.c.id)
    )
    return inserted.scalar()


def get_lead(workspace_id: int, lead_id: int) -> Lead:
    lead = get_scoped(Lead, workspace_id, lead_id)
    if lead.deleted_at is not None or lead.is_group:
        raise NotFound(f"lead {lead_id}")
    return lead


def find_lead_by_phone(workspace_id: int, e164: str) -> Lead | None:
    return db.session.scalar(
        scoped(select(Lead), Lead, workspace_id).where(Lead.phone == e164, Lead.deleted_at.is_(None))
    )


@dataclass(frozen=True)
class LeadFilter:
    q: str = ""
    tag: str = ""
    opt_in: bool | None = None


def filtered_leads(workspace_id: int, filters: LeadFilter) -> Select[tuple[Lead]]:
    stmt = scoped(select(Lead), Lead, workspace_id).where(Lead.deleted_at.is_(None), Lead.kind == "person")
    if filters.q.strip():
        q = filters.q.strip().replace("\x00", "")
        like = f"%{like_escaped(q.lower())}%"
        conditions: list[ColumnElement[bool]] = [
            func.lower(Lead.name).like(like, escape=LIKE_ESCAPE),
            func.lower(Lead.email).like(like, escape=LIKE_ESCAPE),
            func.lower(Lead.notes).like(like, escape=LIKE_ESCAPE),
        ]
        e164 = maybe_e164(q, workspace_country(workspace_id))
        if e164:
            conditions.append(Lead.phone == e164)
        digits = "".join(ch for ch in q if ch.isdigit())
        if len(digits) >= 4:
            conditions.append(Lead.phone.like(f"%{digits}%"))
        stmt = stmt.where(or_(*conditions))
    if filters.tag.strip():
        key = " ".join(filters.tag.replace("\x00", "").split()).casefold()
        stmt = stmt.where(exists().where(and_(LeadTag.lead_id == Lead.id, LeadTag.key == key)))
    if filters.opt_in is not None:
        stmt = stmt.where(Lead.opt_in.is_(filters.opt_in))
    return stmt


def lead_json(lead: Lead) -> dict[str, Any]:
    return {
        "id": lead.id,
        "phone": lead.phone,
        "name": lead.name,
        "email": lead.email,
        "opt_in": lead.opt_in,
        "opted_out_at": iso(lead.opted_out_at),
        "tags": lead.tag_names,
        "created_at": iso(lead.created_at),
    }


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def purge_lead(workspace_id: int, lead_id: int) -> int:
    """Delete a lead for good: their conversations, messages and the files those carried (the
    trash's purge). Returns how many files were removed."""
    from crm.inbox.models import Conversation, Message
    from crm.media.cleanup import delete_unreferenced

    lead = get_scoped(Lead, workspace_id, lead_id)
    media_ids = list(
        db.session.scalars(
            select(Message.media_file_id)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Conversation.lead_id == lead.id, Message.media_file_id.isnot(None))
        )
    )
    db.session.delete(lead)  # conversations, messages and notes go with it: ON DELETE CASCADE
    db.session.commit()
    return delete_unreferenced([m for m in media_ids if m is not None])
