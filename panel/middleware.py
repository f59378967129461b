"""The panel's access rule and error pages, in one place for every panel URL."""

import logging

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import (
    BadRequest,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
)
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.html import escape

from core.api import BODY_TOO_LARGE, body_too_large, error_body
from core.errors import ServiceError
from panel.access import ADMIN, role_of

logger = logging.getLogger(__name__)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Paths that are not the panel's: the JSON API keeps its own errors, and so do these.
NOT_PANEL = ("/api/", "/django-admin/", "/health/", settings.STATIC_URL)

TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Page not found",
    405: "Not allowed here",
    413: "Too much data",
    500: "Something went wrong",
}
MESSAGES = {
    400: "The request could not be understood. Go back and try again.",
    403: "You do not have permission to do that.",
    404: "There is nothing at this address. It may have been deleted, or the link is wrong.",
    405: "This address does not accept that kind of request.",
    413: "That was more data than the panel accepts in one request. Nothing was changed.",
    500: "The panel hit an unexpected error. It has been logged; try again in a moment.",
}


def is_panel_path(path: str) -> bool:
    return not path.startswith(NOT_PANEL)


def error_page(request, status: int, message: str | None = None):
    """A friendly page for an error; never a stack trace, whatever DEBUG says."""
    context = {
        "status": status,
        "title": TITLES.get(status, "Error"),
        "message": message or MESSAGES.get(status, MESSAGES[400]),
    }
    try:
        response = render(request, "panel/error.html", context, status=status)
    except Exception:  # the page itself failed (the database is down?): plain words then
        logger.exception("error page failed to render")
        response = HttpResponse(
            f"<!doctype html><title>{context['title']}</title><h1>{context['title']}</h1>"
            f"<p>{escape(context['message'])}</p>",
            status=status,
        )
    response.panel_page = True
    return response


class BodyLimitMiddleware:
    """A request body over DATA_UPLOAD_MAX_MEMORY_SIZE (by its Content-Length, multipart file
    uploads included) is a 413 before anything reads it: the CSRF check reads the form first,
    and Django would turn its RequestDataTooBig into a bare 400 there. In the error envelope
    under /api/, the panel's error page elsewhere."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        scope = getattr(request, "scope", {})  # under ASGI: saas.asgi cut a chunked body
        if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE or scope.get(BODY_TOO_LARGE):
            return body_too_large_response(request)
        return self.get_response(request)


def body_too_large_response(request):
    error = body_too_large()
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(error.type, error.message), status=error.status)
    return error_page(request, 413)


class PanelMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        # Errors raised outside a view (an unknown URL, Django's handlers) arrive here as a
        # finished response; with DEBUG on that is the technical page, which we replace.
        if (
            response.status_code in (404, 405, 500)
            and not getattr(response, "panel_page", False)
            and is_panel_path(request.path)
        ):
            return error_page(request, response.status_code)
        return response

    def process_view(self, request, view_func, view_args, view_kwargs):
        match = request.resolver_match
        if match is None or "panel" not in match.namespaces:
            return None
        request.panel_role = role_of(request.user)
        if getattr(view_func, "panel_public", False):
            return None
        if not request.user.is_authenticated:
            response = redirect_to_login(request.get_full_path())
            if request.headers.get("HX-Request"):
                # An htmx call (live search) would follow the redirect and swap the login
                # form into the page; have htmx load the login page itself instead.
                response = HttpResponse(status=204, headers={"HX-Redirect": response.url})
            return response
        if request.panel_role is None:
            return error_page(
                request,
                403,
                "Your account has no panel role. Ask a platform admin to add you to the "
                "`admin` or `viewer` group.",
            )
        if (
            request.method not in SAFE_METHODS
            and request.panel_role != ADMIN
            and not getattr(view_func, "panel_any_role_post", False)
        ):
            return error_page(
                request, 403, "You have read-only access: viewers can look but not change."
            )
        return None

    def process_exception(self, request, exception):
        if not is_panel_path(request.path):
            return None
        if isinstance(exception, Http404):
            return error_page(request, 404)
        if isinstance(exception, PermissionDenied):
            return error_page(request, 403)
        if isinstance(exception, ServiceError):
            return error_page(request, exception.status, exception.message)
        if isinstance(exception, RequestDataTooBig):  # a body beyond its Content-Length
            return body_too_large_response(request)
        if isinstance(exception, BadRequest | SuspiciousOperation):
            return error_page(request, 400)
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_page(request, 500)
