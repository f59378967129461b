"""Fields and helpers every page's forms share."""

import uuid

from django import forms

from core.errors import ServiceError
from core.money import MoneyError, display_micros, parse_micros
from panel.forms.pickers import PickerField


class MoneyField(forms.Field):
    """A decimal string in the form, integer micro-units in cleaned_data (None when blank).

    Services take the value under the field's name plus `_micros` (see `service_name`)."""

    widget = forms.TextInput
    MAX_LENGTH = 40

    def __init__(self, *, allow_negative: bool = False, **kwargs):
        self.allow_negative = allow_negative
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.widget.attrs.update(
            inputmode="decimal", autocomplete="off", placeholder="0.00", maxlength=self.MAX_LENGTH
        )

    def prepare_value(self, value):
        if isinstance(value, int):
            return display_micros(value, places=0, grouping=False)
        return value

    def to_python(self, value):
        value = (value or "").strip() if isinstance(value, str | type(None)) else value
        if value in self.empty_values:
            return None
        if len(str(value)) > self.MAX_LENGTH:
            raise forms.ValidationError("That is not an amount.")
        try:
            return parse_micros(value, allow_negative=self.allow_negative)
        except MoneyError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def has_changed(self, initial, data):
        try:
            return self.to_python(data) != initial
        except forms.ValidationError:
            return True


def service_name(form_class, name: str) -> str:
    """The name a service and the model use for a form field: amounts are `<name>_micros`."""
    field = form_class.base_fields.get(name)
    return f"{name}_micros" if isinstance(field, MoneyField) else name


def limit_field(
    label: str, bounds: dict, help_text: str = "Empty: unlimited."
) -> forms.IntegerField:
    """An optional limit; `bounds` is min_value/max_value from the domain's rules."""
    return forms.IntegerField(label=label, required=False, help_text=help_text, **bounds)


def service_error_to_form(form: forms.Form, exc: ServiceError) -> None:
    """Show a service's refusal on the form: its field errors next to their fields, and its
    message at the top."""
    form.add_error(None, exc.message)
    for field, messages in exc.fields.items():
        if field in form.fields:
            for message in messages if isinstance(messages, list) else [messages]:
                form.add_error(field, message)


def new_idempotency_key() -> str:
    """One per rendered form: a double submit of the same form posts once."""
    return uuid.uuid4().hex


class OrganizationChoice(forms.Form):
    """An `organization` field: picked by name, cleaned to the Organization."""

    organization = PickerField(
        "organization", required=True, help_text="The organization it belongs to."
    )
