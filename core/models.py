"""Abstract bases for our tables (no tables of their own)."""

from django.db import models


class Stamped(models.Model):
    """A row that keeps when it was created and last saved, listed newest first.

    A subclass with its own Meta extends `Stamped.Meta` to keep the ordering."""

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        ordering = ["-id"]
