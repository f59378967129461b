"""Admin API authentication: the X-Admin-Key header (MASTER_KEY, or a minted admin key)."""

import hmac
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from core.secrets import hashes_match, lookup_prefix
from orgs.models import AdminKey

HEADER = "X-Admin-Key"


@dataclass(frozen=True)
class AdminPrincipal:
    """Who is calling the admin API. `organization` set means an org-scoped key."""

    actor: str
    organization: object = None
    admin_key: AdminKey | None = None
    is_authenticated: bool = True

    @property
    def is_platform(self) -> bool:
        return self.organization is None


class AdminKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        secret = request.headers.get(HEADER)
        if not secret:
            return None
        if settings.MASTER_KEY and _constant_time_equal(secret, settings.MASTER_KEY):
            return AdminPrincipal(actor="master"), None
        key = (
            AdminKey.objects.select_related("organization")
            .filter(key_prefix=lookup_prefix(secret))
            .first()
        )
        if key is None or not hashes_match(secret, key.key_hash):
            raise exceptions.AuthenticationFailed(f"The {HEADER} header holds no valid admin key.")
        if not key.is_active:
            raise exceptions.AuthenticationFailed(
                f"This admin key ({key.public_id}) was revoked; ask a platform admin for a new one."
            )
        now = timezone.now()
        # One write a minute at most: last_used_at is for humans, not for accounting.
        if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
            AdminKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return AdminPrincipal(
            actor=f"admin_key:{key.public_id}", organization=key.organization, admin_key=key
        ), None

    def authenticate_header(self, request):
        return HEADER


def _constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class IsAdmin(permissions.BasePermission):
    message = f"Send an admin key in the {HEADER} header."

    def has_permission(self, request, view):
        return isinstance(request.user, AdminPrincipal)


class IsPlatformAdmin(IsAdmin):
    message = "This needs a platform admin key; organization-scoped keys cannot do it."

    def has_permission(self, request, view):
        return super().has_permission(request, view) and request.user.is_platform


class PlatformWritesOnly(IsAdmin):
    """Org-scoped keys may read shared catalog objects (models, groups) but not change them."""

    message = IsPlatformAdmin.message

    def has_permission(self, request, view):
        if not super().has_permission(request, view):
            return False
        return request.method in permissions.SAFE_METHODS or request.user.is_platform


class AdminKeyScheme(OpenApiAuthenticationExtension):
    target_class = AdminKeyAuthentication
    name = "AdminKey"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": HEADER}
