"""Admin API: organizations, admin keys, audit events."""

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from core.api import AdminView
from core.fields import JSONObjectField, PublicIdRelatedField
from orgs import services
from orgs.auth import IsPlatformAdmin
from orgs.models import AdminKey, AuditEvent, Organization


class OrganizationOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")

    class Meta:
        model = Organization
        fields = [
            "id",
            "name",
            "external_id",
            "metadata",
            "status",
            "billing_email",
            "created_at",
            "updated_at",
        ]


class OrganizationInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    external_id = serializers.CharField(max_length=200, required=False, allow_null=True)
    metadata = JSONObjectField(required=False)
    status = serializers.ChoiceField(choices=Organization.Status.choices, required=False)
    billing_email = serializers.EmailField(
        required=False, allow_blank=True, help_text="Budget and low-balance alerts go here."
    )


class OrganizationFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Organization.Status.choices)
    external_id = django_filters.CharFilter()
    search = django_filters.CharFilter(field_name="name", lookup_expr="icontains")

    class Meta:
        model = Organization
        fields = ["status", "external_id"]


class OrganizationBase(AdminView):
    serializer_class = OrganizationOutput

    def get_queryset(self):
        return self.scope_to_org(Organization.objects.all(), path="pk")


class OrganizationList(OrganizationBase):
    filterset_class = OrganizationFilter

    @extend_schema(responses=OrganizationOutput(many=True))
    def get(self, request):
        return self.paginated(self.get_queryset(), OrganizationOutput)

    @extend_schema(
        request=OrganizationInput, responses={201: OrganizationOutput, 200: OrganizationOutput}
    )
    def post(self, request):
        if not self.principal.is_platform:
            self.permission_denied(request, IsPlatformAdmin.message)
        data = OrganizationInput(data=request.data)
        data.is_valid(raise_exception=True)
        org, created = services.organization_create(actor=self.actor, **data.validated_data)
        return Response(
            OrganizationOutput(org).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class OrganizationDetail(OrganizationBase):
    @extend_schema(responses=OrganizationOutput)
    def get(self, request, id):
        return Response(OrganizationOutput(self.get_object()).data)

    @extend_schema(request=OrganizationInput(partial=True), responses=OrganizationOutput)
    def patch(self, request, id):
        org = self.get_object()
        if not self.principal.is_platform:
            self.permission_denied(request, IsPlatformAdmin.message)
        data = OrganizationInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.organization_update(actor=self.actor, org=org, data=data.validated_data)
        return Response(OrganizationOutput(org).data)

    @extend_schema(responses={204: None})
    def delete(self, request, id):
        org = self.get_object()
        if not self.principal.is_platform:
            self.permission_denied(request, IsPlatformAdmin.message)
        services.organization_delete(actor=self.actor, org=org)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AdminKeyOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    organization = serializers.CharField(
        source="organization.public_id", allow_null=True, default=None
    )
    status = serializers.SerializerMethodField()

    class Meta:
        model = AdminKey
        fields = [
            "id",
            "name",
            "organization",
            "key_prefix",
            "status",
            "created_by",
            "created_at",
            "last_used_at",
            "revoked_at",
        ]

    def get_status(self, obj) -> str:
        return "active" if obj.is_active else "revoked"


class AdminKeyCreated(AdminKeyOutput):
    secret = serializers.CharField(help_text="Shown once. Store it now; it cannot be retrieved.")

    class Meta(AdminKeyOutput.Meta):
        fields = [*AdminKeyOutput.Meta.fields, "secret"]


class AdminKeyInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    organization = PublicIdRelatedField(
        kind="organization",
        queryset=Organization.objects.all(),
        required=False,
        allow_null=True,
        help_text="Scope the key to one organization.",
    )


class AdminKeyBase(AdminView):
    permission_classes = [IsPlatformAdmin]
    serializer_class = AdminKeyOutput

    def get_queryset(self):
        return AdminKey.objects.select_related("organization")


class AdminKeyList(AdminKeyBase):
    @extend_schema(responses=AdminKeyOutput(many=True))
    def get(self, request):
        return self.paginated(self.get_queryset(), AdminKeyOutput)

    @extend_schema(request=AdminKeyInput, responses={201: AdminKeyCreated})
    def post(self, request):
        data = AdminKeyInput(data=request.data)
        data.is_valid(raise_exception=True)
        key, secret = services.admin_key_create(actor=self.actor, **data.validated_data)
        key.secret = secret
        return Response(AdminKeyCreated(key).data, status=status.HTTP_201_CREATED)


class AdminKeyDetail(AdminKeyBase):
    @extend_schema(responses=AdminKeyOutput)
    def get(self, request, id):
        return Response(AdminKeyOutput(self.get_object()).data)

    @extend_schema(responses=AdminKeyOutput, description="Revokes the key (kept for the audit).")
    def delete(self, request, id):
        key = services.admin_key_revoke(actor=self.actor, key=self.get_object())
        return Response(AdminKeyOutput(key).data)


class AuditEventOutput(serializers.ModelSerializer):
    organization = serializers.CharField(
        source="organization.public_id", allow_null=True, default=None
    )

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "actor",
            "action",
            "object_type",
            "object_id",
            "organization",
            "changes",
            "created_at",
        ]


class AuditEventFilter(django_filters.FilterSet):
    organization = django_filters.CharFilter(field_name="organization__public_id")
    object_id = django_filters.CharFilter()
    object_type = django_filters.CharFilter()
    action = django_filters.CharFilter()
    actor = django_filters.CharFilter()
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["organization", "object_id", "object_type", "action", "actor"]


class AuditEventList(AdminView):
    filterset_class = AuditEventFilter
    serializer_class = AuditEventOutput

    def get_queryset(self):
        return self.scope_to_org(AuditEvent.objects.select_related("organization"))

    @extend_schema(responses=AuditEventOutput(many=True))
    def get(self, request):
        return self.paginated(self.get_queryset(), AuditEventOutput)
