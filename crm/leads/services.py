"""Leads: create, edit and find, with phones in E.164, case-insensitive tags and custom fields."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from email_validator import EmailNotValidError, validate_email
from flask_babel import gettext as _
from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError

from crm.auth.models import Workspace
from crm.db import insert_ignoring_conflicts, utcnow
from crm.errors import Conflict, NotFound, ValidationFailed
from crm.extensions import db
from crm.leads.consent import ConsentChange, record_consent
from crm.leads.models import ConsentSource, Lead, LeadSource, LeadTag
from crm.leads.phones import to_e164
from crm.tenancy import get_scoped, scoped
from crm.textcheck import check_clean_text

MAX_TAG_LENGTH = 64
MAX_TAGS_PER_LEAD = 50
MAX_NOTES = 10_000
MAX_FIELDS = 50
MAX_FIELD_NAME = 64
MAX_FIELD_VALUE = 1000


def tag_key(tag: str) -> str:
    """What a tag typed in a filter is matched by: spaces tidied, case folded (as stored)."""
    return " ".join(tag.replace("\x00", "").split()).casefold()


def clean_tags(tags: Iterable[Any]) -> list[str]:
    """Trimmed, de-duplicated case-insensitively, first spelling kept."""
    seen: dict[str, str] = {}
    for raw in tags:
        if not isinstance(raw, str):
            raise ValidationFailed(_("Tags must be text."), code="invalid_tags")
        name = " ".join(check_clean_text(raw, code="invalid_tags").split())
        if not name:
            continue
        if len(name.casefold()) > MAX_TAG_LENGTH or len(name) > MAX_TAG_LENGTH:  # "ß" folds to "ss"
            raise ValidationFailed(
                _("A tag can have at most %(n)d characters.", n=MAX_TAG_LENGTH), code="invalid_tags"
            )
        seen.setdefault(name.casefold(), name)
    if len(seen) > MAX_TAGS_PER_LEAD:
        raise ValidationFailed(
            _("A lead can have at most %(n)d tags.", n=MAX_TAGS_PER_LEAD), code="invalid_tags"
        )
    return list(seen.values())


def check_email(email: str | None) -> str | None:
    if email is None or email.strip() == "":
        return None
    check_clean_text(email, code="invalid_email")
    try:
        return validate_email(
            email.strip(), check_deliverability=False, globally_deliverable=False
        ).normalized
    except EmailNotValidError as exc:
        raise ValidationFailed(_("Enter a valid email address."), code="invalid_email") from exc


def check_name(name: str) -> str:
    if len(name) > 200:
        raise ValidationFailed(_("The name is too long."), code="invalid_name")
    return " ".join(check_clean_text(name, code="invalid_name").split())


def check_notes(notes: str) -> str:
    if len(notes) > MAX_NOTES:
        raise ValidationFailed(
            _("Notes can have at most %(n)d characters.", n=MAX_NOTES), code="invalid_notes"
        )
    return check_clean_text(notes, code="invalid_notes").strip()


def check_custom_fields(fields: Any) -> dict[str, str]:
    """Custom fields: text values by a short name; an empty value removes the field."""
    if not isinstance(fields, dict):
        raise ValidationFailed(_("Custom fields must be names with text values."), code="invalid_fields")
    clean: dict[str, str] = {}
    for raw_name, raw_value in fields.items():
        if (
            not isinstance(raw_name, str)
            or not isinstance(raw_value, str | int | float)
            or isinstance(raw_value, bool)
        ):
            raise ValidationFailed(_("Custom fields must be names with text values."), code="invalid_fields")
        name = " ".join(check_clean_text(raw_name, code="invalid_fields").split())
        value = check_clean_text(str(raw_value), code="invalid_fields").strip()
        if not name or len(name) > MAX_FIELD_NAME or len(value) > MAX_FIELD_VALUE:
            raise ValidationFailed(
                _(
                    "A custom field needs a name of at most %(n)d characters and a value of at most %(m)d.",
                    n=MAX_FIELD_NAME,
                    m=MAX_FIELD_VALUE,
                ),
                code="invalid_fields",
            )
        if name.casefold() in {taken.casefold() for taken in clean}:
            raise ValidationFailed(
                _("Two custom fields are called “%(name)s”.", name=name), code="invalid_fields"
            )
        if value:
            clean[name] = value
    if len(clean) > MAX_FIELDS:
        raise ValidationFailed(
            _("A lead can have at most %(n)d custom fields.", n=MAX_FIELDS), code="invalid_fields"
        )
    return clean


def workspace_country(workspace_id: int) -> str:
    workspace = db.session.get(Workspace, workspace_id)
    return workspace.country if workspace else "BR"


class DuplicateLead(Conflict):
    """Another lead of the workspace has this phone; ``lead_id`` names them so a form can link."""

    code = "duplicate_lead"

    def __init__(self, message: str, lead_id: int | None):
        super().__init__(message)
        self.lead_id = lead_id


def _duplicate(workspace_id: int, e164: str, exclude_id: int | None = None) -> DuplicateLead:
    """The 409 for a phone that another lead has (the trash included: restoring them is the way
    back)."""
    stmt = select(Lead.id, Lead.deleted_at).where(Lead.workspace_id == workspace_id, Lead.phone == e164)
    if exclude_id is not None:
        stmt = stmt.where(Lead.id != exclude_id)
    row = db.session.execute(stmt).first()
    if row is not None and row.deleted_at is not None:
        return DuplicateLead(_("A lead in the trash already has this phone: restore them instead."), row.id)
    return DuplicateLead(_("A lead with this phone already exists."), row.id if row is not None else None)


def create_lead(
    workspace_id: int,
    *,
    phone: str,
    name: str = "",
    email: str | None = None,
    notes: str = "",
    opt_in: bool = False,
    tags: Iterable[Any] = (),
    custom_fields: dict[str, Any] | None = None,
    source: LeadSource = LeadSource.MANUAL,
    consent: ConsentChange | None = None,
) -> Lead:
    """A new lead; the phone must parse (workspace country by default) and be new in the workspace.

    Opting in at creation is recorded in the consent history (``consent`` says who and how)."""
    e164 = to_e164(phone, workspace_country(workspace_id))
    clean_email = check_email(email)
    tag_names = clean_tags(tags)
    clean_name, clean_notes = check_name(name), check_notes(notes)
    fields = check_custom_fields(custom_fields or {})
    if find_lead_by_phone(workspace_id, e164, include_trash=True) is not None:
        raise _duplicate(workspace_id, e164)
    now = utcnow()
    lead = Lead(
        workspace_id=workspace_id,
        phone=e164,
        name=clean_name,
        email=clean_email,
        notes=clean_notes,
        custom_fields=fields or None,
        source=source.value,
        opt_in=False,
        created_at=now,
    )
    db.session.add(lead)
    set_tags(lead, tag_names)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise _duplicate(workspace_id, e164) from None
    if opt_in:
        record_consent(lead, True, consent or ConsentChange(ConsentSource.FORM))
    db.session.commit()
    return lead


@dataclass(frozen=True)
class LeadChanges:
    """What an edit changes; None leaves a field as it is."""

    phone: str | None = None
    name: str | None = None
    email: str | None = None  # "" clears it
    notes: str | None = None
    opt_in: bool | None = None
    tags: list[Any] | None = None
    custom_fields: dict[str, Any] | None = None


def update_lead(workspace_id: int, lead_id: int, changes: LeadChanges, consent: ConsentChange) -> Lead:
    """Apply an edit. A new phone must parse and be free; a change of consent is recorded in the
    history with ``consent`` (who and how). Everything is checked before anything changes."""
    lead = get_lead(workspace_id, lead_id)
    e164 = to_e164(changes.phone, workspace_country(workspace_id)) if changes.phone is not None else None
    clean_email = check_email(changes.email) if changes.email is not None else None
    clean_name = check_name(changes.name) if changes.name is not None else None
    clean_notes = check_notes(changes.notes) if changes.notes is not None else None
    tag_names = clean_tags(changes.tags) if changes.tags is not None else None
    fields = check_custom_fields(changes.custom_fields) if changes.custom_fields is not None else None
    if e164 is not None and e164 != lead.phone:
        if find_lead_by_phone(workspace_id, e164, include_trash=True) is not None:
            raise _duplicate(workspace_id, e164, exclude_id=lead.id)
        lead.phone = e164
    if clean_name is not None:
        lead.name = clean_name
    if changes.email is not None:
        lead.email = clean_email
    if clean_notes is not None:
        lead.notes = clean_notes
    if fields is not None:
        lead.custom_fields = fields or None
    if tag_names is not None:
        set_tags(lead, tag_names)
    # opt_in false is an opt-out, also for a lead who never opted in: from then on they get nothing.
    if changes.opt_in is True and not lead.opt_in:
        record_consent(lead, True, consent)
    elif changes.opt_in is False and lead.opted_out_at is None:
        record_consent(lead, False, consent)
    announce_leads_changed(workspace_id, [lead.id])
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise _duplicate(workspace_id, e164 or "", exclude_id=lead_id) from None
    return lead


def insert_lead_if_new(
    workspace_id: int,
    phone: str | None,
    bsuid: str | None,
    name: str | None,
    kind: str = "person",
    source: LeadSource = LeadSource.INBOUND,
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
            source=source.value,
            notes="",
            opt_in=False,
            created_at=now,
            updated_at=now,
        )
        .returning(leads.c.id)
    )
    return inserted.scalar()


def get_lead(workspace_id: int, lead_id: int, *, include_trash: bool = False) -> Lead:
    lead = get_scoped(Lead, workspace_id, lead_id)
    if (lead.deleted_at is not None and not include_trash) or lead.is_group:
        raise NotFound(f"lead {lead_id}")
    return lead


def find_lead_by_phone(workspace_id: int, e164: str, *, include_trash: bool = False) -> Lead | None:
    stmt = scoped(select(Lead), Lead, workspace_id).where(Lead.phone == e164)
    if not include_trash:
        stmt = stmt.where(Lead.deleted_at.is_(None))
    return db.session.scalar(stmt)


def set_tags(lead: Lead, tags: list[str]) -> None:
    wanted = {t.casefold(): t for t in tags}
    for tag in list(lead.tags):
        if tag.key not in wanted:
            lead.tags.remove(tag)
    have = {t.key for t in lead.tags}
    for key, name in wanted.items():
        if key not in have:
            lead.tags.append(LeadTag(workspace_id=lead.workspace_id, name=name, key=key))


def lead_json(lead: Lead) -> dict[str, Any]:
    return {
        "id": lead.id,
        "phone": lead.phone,
        "name": lead.name,
        "email": lead.email,
        "opt_in": lead.opt_in,
        "opted_out_at": iso(lead.opted_out_at),
        "tags": lead.tag_names,
        "notes": lead.notes,
        "custom_fields": lead.custom_fields or {},
        "source": lead.source,
        "created_at": iso(lead.created_at),
        "deleted_at": iso(lead.deleted_at),
    }


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def announce_leads_changed(workspace_id: int, lead_ids: Iterable[int]) -> None:
    """Once the change commits, open inboxes redraw these leads' conversations (name, tags and
    consent show there)."""
    from crm.inbox.models import Conversation
    from crm.realtime.broker import publish_after_commit

    ids = list(lead_ids)
    if not ids:
        return
    for conversation_id in db.session.scalars(
        select(Conversation.id).where(
            Conversation.workspace_id == workspace_id, Conversation.lead_id.in_(ids)
        )
    ):
        publish_after_commit(
            workspace_id, {"type": "conversation.updated", "conversation_id": conversation_id}
        )
