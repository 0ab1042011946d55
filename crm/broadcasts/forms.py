"""The compose form: what was typed, read into a ``Draft``, and the services' errors placed next to
the fields they are about.

The form keeps everything as typed (so a page with an error shows it all again) and checks only
what the service can't: that something was chosen, and that a date is a date. Everything else is
the service's to judge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from flask_babel import gettext as _
from werkzeug.datastructures import MultiDict

from crm.broadcasts.render import MAX_VARIANTS
from crm.broadcasts.services import Draft
from crm.errors import DomainError, ValidationFailed
from crm.params import parse_id

MAX_PARAMS = 20  # more template parameters than any approved template has
MAX_TAGS = 50
LATEST = timedelta(days=365)  # how far ahead a broadcast may be scheduled

# Which field a service's error code belongs to; anything else is shown above the form.
FIELD_OF_ERROR = {
    "invalid_name": "name",
    "invalid_text": "variants",
    "invalid_variable": "variants",
    "invalid_template": "template",
    "invalid_template_params": "template",
    "invalid_tags": "tags",
    "invalid_exclusion": "exclude_days",
    "empty_audience": "audience",
    "invalid_groups": "groups",
    "invalid_account_ids": "numbers",
    "no_account": "numbers",
    "invalid_hours": "hours",
    "invalid_scheduled_at": "schedule",
    "invalid_media": "file",
    "media_too_large": "file",
    "needs_ffmpeg": "file",
    "media_invalid": "file",
}


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()][:MAX_TAGS]


def _ids(values: list[str]) -> list[int]:
    return list(dict.fromkeys(i for i in (parse_id(v) for v in values[:1000]) if i is not None))


@dataclass
class ComposeForm:
    name: str = ""
    kind: str = "text"  # text | template
    variants: list[str] = field(default_factory=lambda: [""])
    template: str = ""  # "name|language"
    template_values: dict[str, str] = field(default_factory=dict)
    audience: str = "leads"  # leads | groups
    tags: str = ""
    exclude_tags: str = ""
    exclude_days: str = ""
    group_ids: list[int] = field(default_factory=list)
    account_ids: list[int] = field(default_factory=list)
    when: str = "now"  # now | later
    scheduled_local: str = ""  # as a datetime-local input sends it: 2026-12-24T09:00
    send_from: str = ""
    send_until: str = ""
    had_file: bool = False
    errors: dict[str, list[str]] = field(default_factory=dict)
    form_errors: list[str] = field(default_factory=list)

    @classmethod
    def from_data(cls, data: MultiDict[str, str]) -> ComposeForm:
        """What was sent, kept as typed (bounded, so a hand-made request can't make it huge)."""
        variants = [v[:5000] for v in data.getlist("variant")[: MAX_VARIANTS + 5]]
        values = {
            key.removeprefix("param-")[:64]: data.get(key, "")[:2000]
            for key in list(data.keys())[:200]
            if key.startswith("param-")
        }
        return cls(
            name=data.get("name", "")[:400],
            kind="template" if data.get("kind") == "template" else "text",
            variants=variants or [""],
            template=data.get("template", "")[:600],
            template_values=dict(list(values.items())[:MAX_PARAMS]),
            audience="groups" if data.get("audience") == "groups" else "leads",
            tags=data.get("tags", "")[:2000],
            exclude_tags=data.get("exclude_tags", "")[:2000],
            exclude_days=data.get("exclude_days", "").strip()[:10],
            group_ids=_ids(data.getlist("group_id")),
            account_ids=_ids(data.getlist("account_id")),
            when="later" if data.get("when") == "later" else "now",
            scheduled_local=data.get("scheduled_at", "").strip()[:40],
            send_from=data.get("send_from", "").strip()[:8],
            send_until=data.get("send_until", "").strip()[:8],
        )

    # --- reading it -----------------------------------------------------------------------------

    @property
    def template_choice(self) -> tuple[str, str] | None:
        name, sep, language = self.template.rpartition("|")
        return (name, language) if sep and name else None

    def exclusion_days(self) -> int | None:
        if not self.exclude_days:
            return None
        if not self.exclude_days.isdigit():
            raise ValidationFailed(_("Write the number of days as a whole number."), code="invalid_exclusion")
        return int(self.exclude_days)

    def scheduled_at(self, tz: str, now: datetime) -> datetime | None:
        """The chosen moment in UTC, read in the workspace's time zone; None to send now."""
        if self.when != "later":
            return None
        try:
            local = datetime.fromisoformat(self.scheduled_local)
        except ValueError:
            raise ValidationFailed(
                _("Choose the day and time to send."), code="invalid_scheduled_at"
            ) from None
        if local.tzinfo is not None:
            raise ValidationFailed(_("Choose the day and time to send."), code="invalid_scheduled_at")
        moment = local.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)
        if moment < now - timedelta(minutes=1):
            raise ValidationFailed(
                _("That time has passed: choose a later one."), code="invalid_scheduled_at"
            )
        if moment > now + LATEST:
            raise ValidationFailed(_("Schedule it within the next year."), code="invalid_scheduled_at")
        return moment

    def audience_draft(self) -> Draft:
        """Only who it goes to (the live count and the preview's sample lead)."""
        if self.audience == "groups":
            return Draft(name="", group_ids=self.group_ids)
        try:
            days = self.exclusion_days()
        except DomainError:
            days = None
        return Draft(
            name="",
            tags=_split(self.tags),
            exclude_tags=_split(self.exclude_tags),
            exclude_contacted_days=days,
        )

    def draft(self, tz: str, now: datetime, user_id: int | None) -> Draft:
        """The whole draft for ``create_broadcast``; raises for what only the form can tell."""
        template = self.template_choice if self.kind == "template" else None
        if self.kind == "template" and template is None:
            raise ValidationFailed(_("Choose an approved template."), code="invalid_template")
        groups = self.audience == "groups"
        return Draft(
            name=self.name,
            variants=[] if template else [v for v in self.variants if v.strip()],
            tags=[] if groups else _split(self.tags),
            exclude_tags=[] if groups else _split(self.exclude_tags),
            exclude_contacted_days=None if groups else self.exclusion_days(),
            group_ids=self.group_ids if groups else [],
            account_ids=None if groups else self.account_ids,
            scheduled_at=self.scheduled_at(tz, now),
            send_from=self.send_from[:5] or None,
            send_until=self.send_until[:5] or None,
            template_name=template[0] if template else None,
            template_language=template[1] if template else None,
            template_values=dict(self.template_values) if template else {},
            user_id=user_id,
        )

    # --- what the form itself can tell ------------------------------------------------------------

    def check_choices(self) -> None:
        """Everything that was left out, at once (the service would name one thing at a time)."""
        if not self.name.strip():
            self.add_error("name", _("Give the broadcast a name."))
        if self.kind == "text" and not any(v.strip() for v in self.variants):
            self.add_error("variants", _("Write the message text."))
        if self.kind == "template" and self.template_choice is None:
            self.add_error("template", _("Choose an approved template."))
        if self.audience == "groups" and not self.group_ids:
            self.add_error("groups", _("Choose at least one group."))
        if self.audience == "leads" and not self.account_ids:
            self.add_error("numbers", _("Choose at least one number to send from."))
        if self.when == "later" and not self.scheduled_local:
            self.add_error("schedule", _("Choose the day and time to send."))

    @property
    def has_errors(self) -> bool:
        return bool(self.errors or self.form_errors)

    def add_error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def show_error(self, error: DomainError) -> None:
        """Put a service's error next to the field it is about."""
        name = FIELD_OF_ERROR.get(error.code)
        if name is None:
            self.form_errors.append(error.message)
        else:
            self.add_error(name, error.message)
