from __future__ import annotations

from pathlib import PurePath
from typing import Any

from babel.dates import get_day_names
from flask_babel import format_number, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import (
    BooleanField,
    EmailField,
    Field,
    IntegerField,
    PasswordField,
    RadioField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    TimeField,
)
from wtforms.validators import (
    DataRequired,
    Email,
    InputRequired,
    Length,
    NumberRange,
    ValidationError,
)
from wtforms.validators import Optional as OptionalValue

from crm.ai.settings import (
    MAX_INSTRUCTIONS_CHARS,
    MAX_KNOWLEDGE_CHARS,
    MAX_PER_DAY,
    MAX_PER_MINUTE,
    MAX_TEXT_CHARS,
)

ROLE_CHOICES = [
    SelectChoice("agent", _l("Agent")),
    SelectChoice("admin", _l("Admin")),
    SelectChoice("owner", _l("Owner")),
]


class WorkspaceForm(FlaskForm):
    name = StringField(_l("Workspace name"), validators=[DataRequired(), Length(max=120)])
    country = StringField(_l("Default phone country"), validators=[DataRequired(), Length(2, 2)])
    timezone = StringField(_l("Time zone"), validators=[DataRequired(), Length(max=64)])
    locale = SelectField(
        _l("Language for customers and dates"),
        choices=[SelectChoice("pt_BR", "Português (Brasil)"), SelectChoice("en", "English")],
    )
    auto_assign = BooleanField(_l("Assign new conversations automatically"))


class InviteForm(FlaskForm):
    email = EmailField(_l("Email"), validators=[DataRequired(), Email(), Length(max=254)])
    role = SelectField(_l("Role"), choices=ROLE_CHOICES[:2])


class RoleForm(FlaskForm):
    role = SelectField(_l("Role"), choices=ROLE_CHOICES)


class TokenForm(FlaskForm):
    name = StringField(_l("Label"), validators=[Length(max=80)])


class ConsentForm(FlaskForm):
    opt_out_keywords = TextAreaField(_l("Opt-out keywords"), validators=[Length(max=2000)])
    opt_in_keywords = TextAreaField(_l("Opt-in keywords"), validators=[Length(max=2000)])
    opt_out_reply = TextAreaField(_l("Reply to an opt-out"), validators=[Length(max=1000)])
    opt_in_reply = TextAreaField(_l("Reply to an opt-in"), validators=[Length(max=1000)])
    trash_days = IntegerField(
        _l("Days deleted leads stay in the trash"), validators=[InputRequired(), NumberRange(1, 365)]
    )


class ArchiveSettingsForm(FlaskForm):
    enabled = BooleanField(_l("Archive old conversations every night"))
    days = IntegerField(_l("Days without a message"), validators=[OptionalValue(), NumberRange(30, 3650)])


def _newlines(value: Any) -> Any:
    """Browsers send a textarea's lines ending in CRLF: counted and stored as one character."""
    return value.replace("\r\n", "\n") if isinstance(value, str) else value


KNOWLEDGE_SUFFIXES = (".txt", ".md", ".markdown")


class AISettingsForm(FlaskForm):
    """Settings → AI replies. The limits mirror ``crm.ai.settings``, which checks them again."""

    enabled = BooleanField(_l("Answer customers with AI"))
    mode = RadioField(
        _l("When the bot answers"),
        choices=[
            SelectChoice("always", _l("Always")),
            SelectChoice("after_hours", _l("Outside business hours")),
            SelectChoice("unassigned", _l("Only conversations nobody is assigned to")),
        ],
        validators=[InputRequired(message=_l("Choose when the bot answers."))],
    )
    hours_days = SelectMultipleField(_l("Business days"), coerce=int, choices=[])
    hours_start = TimeField(_l("Opening time"), validators=[InputRequired()])
    hours_end = TimeField(_l("Closing time"), validators=[InputRequired()])
    model = StringField(_l("Gemini model"), validators=[DataRequired(), Length(max=80)])
    instructions = TextAreaField(
        _l("System instructions"), validators=[Length(max=MAX_INSTRUCTIONS_CHARS)], filters=[_newlines]
    )
    knowledge = TextAreaField(
        _l("Business knowledge"), validators=[Length(max=MAX_KNOWLEDGE_CHARS)], filters=[_newlines]
    )
    knowledge_file = FileField(_l("Or replace it with a text file (.txt or .md, UTF-8)"))
    fallback = TextAreaField(
        _l("Fallback reply"), validators=[Length(max=MAX_TEXT_CHARS)], filters=[_newlines]
    )
    handoff_keywords = TextAreaField(_l("Hand-off keywords"), validators=[Length(max=4000)])
    handoff_message = TextAreaField(
        _l("Hand-off message"), validators=[Length(max=MAX_TEXT_CHARS)], filters=[_newlines]
    )
    per_minute = IntegerField(
        _l("Requests per minute"), validators=[InputRequired(), NumberRange(1, MAX_PER_MINUTE)]
    )
    per_day = IntegerField(_l("Requests per day"), validators=[InputRequired(), NumberRange(1, MAX_PER_DAY)])
    history_messages = IntegerField(
        _l("Messages of context"), validators=[InputRequired(), NumberRange(1, 100)]
    )
    cache_hours = IntegerField(
        _l("Hours an answer is reused"), validators=[InputRequired(), NumberRange(0, 24 * 30)]
    )
    api_key = PasswordField(_l("Gemini API key"), validators=[Length(max=200)])
    remove_key = BooleanField(_l("Remove this workspace's key"))
    ai_numbers = SelectMultipleField(_l("Numbers the bot answers on"), coerce=int, choices=[])

    def __init__(self, *args: Any, number_ids: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = get_day_names("wide", locale=get_locale())
        self.hours_days.choices = [SelectChoice(day, names[day]) for day in range(7)]
        self.ai_numbers.choices = [SelectChoice(n, str(n)) for n in number_ids or []]
        self.uploaded_knowledge: str | None = None

    def validate_knowledge_file(self, field: Field) -> None:
        """A text file replaces the knowledge: UTF-8 (a BOM is fine), within the length limit."""
        upload = field.data
        if upload is None or not getattr(upload, "filename", ""):
            return
        if not upload.filename.lower().endswith(KNOWLEDGE_SUFFIXES):
            raise ValidationError(_("Upload a .txt or .md file."))
        too_long = _(
            "This file is too long: the knowledge can have at most %(n)s characters.",
            n=format_number(MAX_KNOWLEDGE_CHARS),
        )
        limit = MAX_KNOWLEDGE_CHARS * 4  # UTF-8 takes at most 4 bytes a character
        raw = upload.stream.read(limit + 1)
        if len(raw) > limit:
            raise ValidationError(too_long)
        try:
            text = _newlines(raw.decode("utf-8-sig"))
        except UnicodeDecodeError:
            name = PurePath(upload.filename).name
            raise ValidationError(
                _("%(name)s is not UTF-8 text. Save it as UTF-8 and upload it again.", name=name)
            ) from None
        if len(text) > MAX_KNOWLEDGE_CHARS:
            raise ValidationError(too_long)
        self.uploaded_knowledge = text

    def values(self) -> dict[str, Any]:
        """The settings as ``crm.settings.ai.save_page`` takes them (the key and numbers apart)."""
        start, end = self.hours_start.data, self.hours_end.data
        return {
            "enabled": bool(self.enabled.data),
            "mode": self.mode.data,
            "hours_days": list(self.hours_days.data or []),
            "hours_start": start.strftime("%H:%M") if start else "",
            "hours_end": end.strftime("%H:%M") if end else "",
            "model": self.model.data or "",
            "instructions": self.instructions.data or "",
            "knowledge": self.uploaded_knowledge
            if self.uploaded_knowledge is not None
            else (self.knowledge.data or ""),
            "fallback": self.fallback.data or "",
            "handoff_keywords": self.handoff_keywords.data or "",
            "handoff_message": self.handoff_message.data or "",
            "per_minute": self.per_minute.data,
            "per_day": self.per_day.data,
            "history_messages": self.history_messages.data,
            "cache_hours": self.cache_hours.data,
        }
