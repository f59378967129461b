"""Serializer fields shared by the admin API."""

import re

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.bounds import INT_MAX
from core.money import MoneyError, format_micros, parse_micros

__all__ = ["INT_MAX", "JSONObjectField", "MoneyField", "PublicIdRelatedField"]


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
        if "\x00" in data:  # no id holds one, and Postgres refuses it in a query (a 500)
            self.fail("does_not_exist", kind=self.kind, value=data)
        qs = self.get_queryset()
        obj = qs.filter(public_id=data).first()
        if obj is None and self.name_field:
            obj = qs.filter(**{self.name_field: data}).first()
        if obj is None:
            self.fail("does_not_exist", kind=self.kind, value=data)
        return obj


# Postgres jsonb holds no NUL character and no lone UTF-16 surrogate; either is a DataError.
_JSONB_UNSAFE = re.compile("[\x00\ud800-\udfff]")


class JSONObjectField(serializers.DictField):
    """A free-form JSON object (metadata) bound for a jsonb column."""

    # Far more than metadata needs, and far below the ~1000 levels at which the json module
    # (encoding it for the database or the response) hits the recursion limit: a 500.
    MAX_DEPTH = 32

    default_error_messages = {
        "unsafe_text": "Strings may not contain NUL characters or lone surrogates.",
        "too_deep": "Nested more than {max_depth} levels deep.",
    }

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        pending = [(value, 1)]
        while pending:  # a loop, not recursion, for the same reason
            item, depth = pending.pop()
            if isinstance(item, dict | list) and depth > self.MAX_DEPTH:
                self.fail("too_deep", max_depth=self.MAX_DEPTH)
            if isinstance(item, dict):
                pending.extend((k, depth) for k in item)
                pending.extend((v, depth + 1) for v in item.values())
            elif isinstance(item, list):
                pending.extend((v, depth + 1) for v in item)
            elif isinstance(item, str) and _JSONB_UNSAFE.search(item):
                self.fail("unsafe_text")
        return value
