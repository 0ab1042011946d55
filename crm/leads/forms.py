"""The lead form (new and edit) and how the leads services' errors land on its fields."""

from __future__ import annotations

from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from werkzeug.datastructures import MultiDict
from wtforms import BooleanField, EmailField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from crm.errors import DomainError, ValidationFailed
from crm.leads.models import Lead
from crm.leads.phones import for_humans

MAX_FIELD_ROWS = 60  # more rows than a lead may keep (50): the service says what is wrong

# Which field a service's error code belongs to; anything else is shown above the form.
FIELD_OF_ERROR = {
    "invalid_phone": "phone",
    "duplicate_lead": "phone",
    "invalid_name": "name",
    "invalid_email": "email",
    "invalid_notes": "notes",
    "invalid_tags": "tags",
}


class LeadForm(FlaskForm):
    phone = StringField(
        _l("Phone"), validators=[DataRequired(message=_l("Enter the phone number.")), Length(max=40)]
    )
    name = StringField(_l("Name"), validators=[Length(max=200)])
    email = EmailField(_l("Email"), validators=[Length(max=254)])
    tags = StringField(_l("Tags"), validators=[Length(max=2000)])
    notes = TextAreaField(_l("Notes"), validators=[Length(max=10_000)])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.field_rows: list[tuple[str, str]] = []
        self.field_errors: list[str] = []

    def load_field_rows(self, formdata: MultiDict[str, str]) -> None:
        """The custom fields as typed, name/value rows (kept so a page with errors shows them again);
        rows left empty are dropped."""
        names = formdata.getlist("field_name")[:MAX_FIELD_ROWS]
        values = formdata.getlist("field_value")[:MAX_FIELD_ROWS]
        self.field_rows = [(n, v) for n, v in zip(names, values, strict=False) if n.strip() or v.strip()]

    def custom_fields(self) -> dict[str, str]:
        """The rows as the service takes them; a cleared value removes the field."""
        fields: dict[str, str] = {}
        for name, value in self.field_rows:
            key = " ".join(name.split())
            if not key:
                raise ValidationFailed(_("Give each custom field a name."), code="invalid_fields")
            if key.casefold() in {k.casefold() for k in fields}:
                raise ValidationFailed(
                    _("Two custom fields are called “%(name)s”.", name=key), code="invalid_fields"
                )
            fields[key] = value
        return fields

    def tag_list(self) -> list[str]:
        return [part for part in (self.tags.data or "").split(",") if part.strip()]

    def show_error(self, error: DomainError) -> None:
        """Put a service's error next to the field it is about."""
        field = FIELD_OF_ERROR.get(error.code)
        if field is not None:
            self[field].errors = [*self[field].errors, error.message]
        elif error.code == "invalid_fields":
            self.field_errors.append(error.message)
        else:
            self.form_errors.append(error.message)


class NewLeadForm(LeadForm):
    opt_in = BooleanField(_l("They agreed to receive our messages (opt-in)"))


def edit_form(lead: Lead, formdata: MultiDict[str, str] | None) -> LeadForm:
    """The edit form, filled from the lead (GET) or from what was sent (POST). A lead known only by
    WhatsApp's business-scoped id has no phone to require."""
    form = LeadForm(
        formdata=formdata,
        data={
            "phone": for_humans(lead.phone),
            "name": lead.name,
            "email": lead.email or "",
            "tags": ", ".join(lead.tag_names),
            "notes": lead.notes,
        },
    )
    if not lead.phone:
        form.phone.validators = [Optional(), Length(max=40)]
        form.phone.flags.required = False
    if formdata:
        form.load_field_rows(formdata)
    else:
        form.field_rows = [(str(k), str(v)) for k, v in (lead.custom_fields or {}).items()]
    return form
