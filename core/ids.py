"""Public identifiers: `org_…`, `team_…`, `key_…`. Stable, opaque, safe to show and to log."""

import secrets
import string

from django.db import models

_ALPHABET = string.ascii_lowercase + string.digits


def new_public_id(prefix: str) -> str:
    # 20 chars of [a-z0-9] = ~103 bits: unguessable, so an id alone never grants access,
    # and collisions are not a practical concern (the column is still unique).
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(20))


class PublicIdField(models.CharField):
    """A unique, prefixed id generated on first save; what the API addresses objects by."""

    def __init__(self, *args, prefix: str = "", **kwargs):
        self.prefix = prefix
        kwargs.setdefault("max_length", 40)
        kwargs.setdefault("unique", True)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs["prefix"] = self.prefix
        return name, path, args, kwargs

    def pre_save(self, model_instance, add):
        value = getattr(model_instance, self.attname)
        if not value:
            value = new_public_id(self.prefix)
            setattr(model_instance, self.attname, value)
        return value
