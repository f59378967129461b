"""Serializer fields shared by the admin API."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.money import MoneyError, format_micros, parse_micros


@extend_schema_field({"type": "string", "format": "decimal", "example": "12.500000"})
class MoneyField(serializers.Field):
    """Micro-units in the database, exact decimal strings ("12.500000") on the wire."""

    default_error_messages = {"invalid": "{message}"}

    def __init__(self, *, allow_negative: bool = False, **kwargs):
        self.allow_negative = allow_negative
        super().__init__(**kwargs)

    def to_representation(self, value):
        return format_micros(value)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, str | int):
            self.fail("invalid", message='Send a decimal string such as "12.50".')
        try:
            return parse_micros(data, allow_negative=self.allow_negative)
        except MoneyError as exc:
            self.fail("invalid", message=str(exc))


class PublicIdRelatedField(serializers.SlugRelatedField):
    """A relation addressed by public id (`org_…`), or by unique name where `name_field` is set."""

    default_error_messages = {
        "does_not_exist": "No {kind} with id {value}.",
        "invalid": "Expected an id string.",
    }

    def __init__(self, *, kind: str, name_field: str | None = None, **kwargs):
        self.kind = kind
        self.name_field = name_field
        super().__init__(slug_field="public_id", **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        qs = self.get_queryset()
        obj = qs.filter(public_id=data).first()
        if obj is None and self.name_field:
            obj = qs.filter(**{self.name_field: data}).first()
        if obj is None:
            self.fail("does_not_exist", kind=self.kind, value=data)
        return obj
