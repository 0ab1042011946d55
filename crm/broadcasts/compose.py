"""What the compose page offers and shows: the numbers, groups, templates and variables to choose
from, the preview "as a phone would show it", and the file attached to a broadcast.

Choosing is not checking: ``services.create_broadcast`` decides what is valid. These helpers only
read, except ``attach_file``, which stores an upload with the inbox's own checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from flask_babel import gettext as _
from markupsafe import Markup, escape
from sqlalchemy import select
from werkzeug.datastructures import FileStorage

from crm.broadcasts import render
from crm.broadcasts.services import Draft, audience_query
from crm.errors import Conflict, DomainError
from crm.extensions import db
from crm.leads.models import Lead
from crm.media.models import MediaFile
from crm.tenancy import scoped
from crm.whatsapp.models import MessageTemplate, WhatsAppAccount, WhatsAppGroup

CAPTION_KINDS = ("image", "video", "document")  # the files WhatsApp shows with a caption


@dataclass(frozen=True)
class NumberOption:
    id: int
    name: str
    phone: str | None
    provider: str
    health: str
    health_reason: str | None
    usable: bool


def numbers(workspace_id: int) -> list[NumberOption]:
    """The workspace's numbers that are switched on, in routing order."""
    accounts = db.session.scalars(
        scoped(select(WhatsAppAccount), WhatsAppAccount, workspace_id)
        .where(WhatsAppAccount.status == "active")
        .order_by(WhatsAppAccount.priority, WhatsAppAccount.id)
    )
    return [
        NumberOption(a.id, a.name, a.phone, a.provider, a.health, a.health_reason, a.is_usable)
        for a in accounts
    ]


@dataclass(frozen=True)
class GroupOption:
    id: int
    name: str
    participants: int
    number: str


def groups(workspace_id: int) -> list[GroupOption]:
    """The WhatsApp groups the workspace's WebQR numbers are in (only those numbers reach groups)."""
    rows = db.session.execute(
        select(WhatsAppGroup.id, WhatsAppGroup.name, WhatsAppGroup.participants, WhatsAppAccount.name)
        .join(WhatsAppAccount, WhatsAppAccount.id == WhatsAppGroup.account_id)
        .where(
            WhatsAppGroup.workspace_id == workspace_id,
            WhatsAppAccount.provider == "webqr",
            WhatsAppAccount.status == "active",
        )
        .order_by(WhatsAppGroup.name, WhatsAppGroup.id)
    ).all()
    return [GroupOption(row[0], row[1] or _("(no name)"), row[2], row[3]) for row in rows]


def group_accounts(workspace_id: int, group_ids: list[int]) -> list[int]:
    """The numbers that carry a broadcast to these groups (each group's own)."""
    if not group_ids:
        return []
    found = db.session.scalars(
        scoped(select(WhatsAppGroup.account_id), WhatsAppGroup, workspace_id).where(
            WhatsAppGroup.id.in_(group_ids)
        )
    )
    return sorted(set(found))


def custom_field_names(workspace_id: int, sample: int = 500, most: int = 12) -> list[str]:
    """Custom field names in use, read from the latest leads that have any (a hint for the
    variables help, not a census)."""
    seen: dict[str, str] = {}
    for fields in db.session.scalars(
        scoped(select(Lead.custom_fields), Lead, workspace_id)
        .where(Lead.custom_fields.isnot(None), Lead.deleted_at.is_(None))
        .order_by(Lead.id.desc())
        .limit(sample)
    ):
        for key in fields or {}:
            name = " ".join(str(key).split())
            if (
                name
                and name.casefold() not in seen
                and "{" not in name
                and "}" not in name
                and "|" not in name
            ):
                seen[name.casefold()] = name
    return sorted(seen.values(), key=str.casefold)[:most]


# --- templates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateOption:
    name: str
    language: str
    category: str
    body: str
    params: list[str]

    @property
    def value(self) -> str:
        return f"{self.name}|{self.language}"


def template_options(
    workspace_id: int, account_ids: list[int], offered: list[NumberOption]
) -> list[TemplateOption] | None:
    """The approved templates every chosen number has (a broadcast sends the same template from
    each); None when templates are out of the question (a chosen number is not a Cloud API one)."""
    from crm.whatsapp import templates

    chosen = [n for n in offered if n.id in account_ids]
    if not chosen or any(n.provider != "cloud" for n in chosen):
        return None
    common: dict[tuple[str, str], MessageTemplate] | None = None
    for number in chosen:
        mine = {(t.name, t.language): t for t in templates.sendable_templates(workspace_id, number.id)}
        common = mine if common is None else {k: v for k, v in common.items() if k in mine}
    return [
        TemplateOption(t.name, t.language, t.category, templates.body_text(t), templates.body_params(t))
        for _key, t in sorted((common or {}).items())
    ]


def find_template(options: list[TemplateOption] | None, value: str) -> TemplateOption | None:
    return next((t for t in options or [] if t.value == value), None)


# --- the preview ------------------------------------------------------------------------------

# WhatsApp's own formatting: *bold*, _italic_, ~strikethrough~, ```monospace```.
_STYLES = [
    (re.compile(r"```(.+?)```", re.S), "code"),
    (re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])"), "strong"),
    (re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])"), "em"),
    (re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])"), "s"),
]


def _wrapped(tag: str) -> Callable[[re.Match[str]], str]:
    return lambda match: f"<{tag}>{match.group(1)}</{tag}>"


def whatsapp_markup(text: str) -> Markup:
    """Text as WhatsApp shows it. Escaped first, so only our own tags are ever added."""
    html = str(escape(text))
    for pattern, tag in _STYLES:
        html = pattern.sub(_wrapped(tag), html)
    return Markup(html)  # noqa: S704  (escaped above; the only markup is the four tags added here)


@dataclass(frozen=True)
class Preview:
    html: Markup | None  # None: nothing written yet
    sample: str  # who it is shown for ("" when the audience has nobody yet)
    problem: str  # what is wrong with the text, as the service will say it
    variants: int


def sample_lead(workspace_id: int, draft: Draft) -> Lead | None:
    """The first lead the broadcast would go to (None for groups or an audience of nobody)."""
    if draft.group_ids:
        return None
    try:
        return db.session.scalar(audience_query(workspace_id, draft).order_by(Lead.id).limit(1))
    except DomainError:
        return None


def preview(workspace_id: int, draft: Draft, template: TemplateOption | None) -> Preview:
    """The first variant (or the template) for the audience's first lead, as a phone shows it."""
    lead = sample_lead(workspace_id, draft)
    values = render.lead_values(lead) if lead is not None else {}
    sample = ""
    if lead is not None:
        from crm.leads.phones import for_humans

        sample = lead.name or for_humans(lead.phone) or ""
    elif draft.group_ids:
        name = db.session.scalar(
            scoped(select(WhatsAppGroup.name), WhatsAppGroup, workspace_id).where(
                WhatsAppGroup.id == draft.group_ids[0]
            )
        )
        sample = name or ""
    texts = [v for v in draft.variants if isinstance(v, str) and v.strip()]
    problem = ""
    if template is not None:
        from crm.whatsapp.templates import PLACEHOLDER

        def fill(match: re.Match[str]) -> str:
            raw = str(draft.template_values.get(match.group(1), "")).strip()
            return render.render(raw, values) if raw else match.group(0)

        return Preview(whatsapp_markup(PLACEHOLDER.sub(fill, template.body)), sample, "", 1)
    if not texts:
        return Preview(None, sample, "", 0)
    try:
        render.check_variables(texts[0])
    except DomainError as error:
        problem = error.message
    return Preview(whatsapp_markup(render.render(texts[0], values)), sample, problem, len(texts))


# --- the file ---------------------------------------------------------------------------------


def attach_file(workspace_id: int, account_ids: list[int], upload: FileStorage) -> MediaFile:
    """Check and store a broadcast's file as the inbox does for a reply (real type, size, photo
    checks), against the strictest of the sending numbers; not committed. Only files WhatsApp
    shows with a caption are taken: the message goes with the file."""
    from crm.media.limits import request_cap
    from crm.media.outbound import accept_upload
    from crm.media.services import delete_keys, spooled
    from crm.media.sniff import MediaRejected

    accounts = list(
        db.session.scalars(
            scoped(select(WhatsAppAccount), WhatsAppAccount, workspace_id).where(
                WhatsAppAccount.id.in_(account_ids)
            )
        )
    )
    if not accounts:
        raise Conflict(_("Connect a WhatsApp number before sending a broadcast."), code="no_account")
    # Cloud API limits (the sandbox's too) are the strictest: a file that fits them fits every number.
    account = next((a for a in accounts if a.provider != "webqr"), accounts[0])
    account_id, provider = account.id, account.provider
    with spooled(upload, request_cap(provider)) as spool:
        db.session.commit()  # no transaction stays open while the file is checked and stored
        media = accept_upload(workspace_id, account_id, provider, spool)
    if media.kind not in CAPTION_KINDS:
        key = media.original_key
        db.session.rollback()
        delete_keys(key)
        raise MediaRejected(
            _("A broadcast can carry a photo, a video or a document, with the message as its caption."),
            code="invalid_media",
        )
    return media


def discard_file(media: MediaFile | None) -> None:
    """Undo ``attach_file`` after the broadcast was refused: the row goes with the rollback, the
    stored file here."""
    from crm.media.services import delete_keys

    key = media.original_key if media is not None else None
    db.session.rollback()
    delete_keys(key)
