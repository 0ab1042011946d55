from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    IntegerField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Email, InputRequired, Length, NumberRange

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
