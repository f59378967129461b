"""Shared API plumbing: the one error envelope, pagination, and base views."""

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, generics, parsers, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from core.errors import RequestTooLarge, ServiceError

logger = logging.getLogger(__name__)

_DRF_TYPES = {
    exceptions.ParseError: "invalid_json",
    exceptions.AuthenticationFailed: "authentication_error",
    exceptions.NotAuthenticated: "authentication_error",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
    exceptions.ValidationError: "validation_error",
}


def error_body(type_: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"type": type_, "message": message, "fields": fields or {}}}


def _summarize(fields) -> str:
    """One human sentence out of DRF's nested field errors, for the `message`."""
    if isinstance(fields, list):
        return " ".join(str(m) for m in fields if not isinstance(m, dict | list)) or "Invalid."
    parts = []
    for name, errs in fields.items():
        text = _summarize(errs) if isinstance(errs, dict | list) else str(errs)
        parts.append(text if name == "non_field_errors" else f"{name}: {text}")
    return "; ".join(parts)


# Set in the ASGI scope when saas.asgi cut a body at the limit; panel.middleware answers 413.
BODY_TOO_LARGE = "tollgate.body_too_large"


def body_too_large() -> RequestTooLarge:
    return RequestTooLarge(
        f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes "
        "(API_MAX_BODY_BYTES)."
    )


def exception_handler(exc, context):
    if isinstance(exc, RequestDataTooBig):  # a body without (or beyond) its Content-Length
        exc = body_too_large()
    if isinstance(exc, ServiceError):
        set_rollback()
        return Response(error_body(exc.type, exc.message, exc.fields), status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("No such object.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )

    if isinstance(exc, exceptions.APIException):
        set_rollback()
        type_ = next((t for cls, t in _DRF_TYPES.items() if isinstance(exc, cls)), "api_error")
        if isinstance(exc, exceptions.ValidationError):
            detail = (
                exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
            )
            body = error_body(type_, "Invalid input. " + _summarize(detail), detail)
        else:
            body = error_body(type_, str(exc.detail))
        headers = {}
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            # DRF would turn these into 403 without an authenticate header; they are 401s,
            # and a 401 must name its challenge (RFC 9110 section 11.6.1).
            exc.status_code = status.HTTP_401_UNAUTHORIZED
            if getattr(exc, "auth_header", None):
                headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        return Response(body, status=exc.status_code, headers=headers)

    # Anything else is our bug: log it with the traceback, answer JSON, never an HTML page.
    logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
    set_rollback()
    return Response(
        error_body("internal_error", "Something went wrong on our side; it has been logged."),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def json_not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", "No such endpoint."), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def json_server_error(request):
    if request.path.startswith("/api/"):
        return JsonResponse(
            error_body("internal_error", "Something went wrong on our side; it has been logged."),
            status=500,
        )
    from django.views.defaults import server_error

    return server_error(request)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser; nesting too deep for the json module is a parse error, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from exc


class AdminView(generics.GenericAPIView):
    """Base for admin API views: objects are addressed by public id in the `id` URL segment."""

    lookup_field = "public_id"
    lookup_url_kwarg = "id"
    parser_classes = [JSONParser]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if "\x00" in kwargs.get("id", ""):
            # No public id holds a NUL, and Postgres refuses one in a query (a 500).
            raise exceptions.NotFound("No such object.")

    @property
    def principal(self):
        return self.request.user

    @property
    def actor(self) -> str:
        return self.request.user.actor

    def scope_to_org(self, queryset, path: str = "organization"):
        """Org-scoped admin keys see only their organization's rows; others are a 404."""
        if getattr(self, "swagger_fake_view", False) or self.principal.is_platform:
            return queryset
        org = self.principal.organization
        return queryset.filter(**{path: org.pk if path == "pk" else org})

    def paginated(self, queryset, serializer_class):
        page = self.paginate_queryset(self.filter_queryset(queryset))
        return self.get_paginated_response(serializer_class(page, many=True).data)
