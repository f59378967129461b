"""Small helpers every panel view uses."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render

from core.errors import ServiceError
from panel.access import actor_for
from panel.forms.common import new_idempotency_key, service_error_to_form

# Form tokens already used in this session: a re-sent "mint a key" form must not mint twice.
_USED_TOKENS = "panel_used_form_tokens"
_MAX_TOKENS = 50


def actor(request) -> str:
    return actor_for(request.user)


def param(request, name: str, max_length: int = 200) -> str:
    """A query-string filter, trimmed; a NUL (which Postgres refuses in a query) matches
    nothing rather than failing."""
    value = request.GET.get(name, "").strip()[:max_length]
    return "" if "\x00" in value else value


def choice_filter(request, queryset, name: str, choices):
    """Narrow the queryset by a query-string value that must be one of a TextChoices' values;
    anything else shows everything. Returns (queryset, the value as given)."""
    value = param(request, name)
    if value in choices.values:
        queryset = queryset.filter(**{name: value})
    return queryset, value


def by_public_id(queryset, public_id: str):
    """The object with that public id, or a 404 page (a NUL would be a 500 in Postgres)."""
    if "\x00" in public_id:
        public_id = ""
    return get_object_or_404(queryset, public_id=public_id)


def used_form_token(request, token: str) -> str | None:
    """What a form token already produced (an object id) in this session, if it was used."""
    return dict(request.session.get(_USED_TOKENS, [])).get(token) if token else None


def remember_form_token(request, token: str, result: str) -> None:
    if not token:
        return
    used = [pair for pair in request.session.get(_USED_TOKENS, []) if pair[0] != token]
    request.session[_USED_TOKENS] = [*used, [token, result]][-_MAX_TOKENS:]


def no_store(response):
    """For pages that show a secret: never cached, never restored from history."""
    response["Cache-Control"] = "no-store"
    return response


def secret_page(request, template: str, name: str, obj, secret: str, *, rotated=False):
    """The one page that shows a newly minted secret, under `name` with the object it opens."""
    context = {name: obj, "secret": secret, "rotated": rotated}
    return no_store(render(request, template, context))


def create_once(request, form, *, create, detail: str, already: str, shown):
    """A create form whose result carries a secret shown once; a re-sent form (a reload, a
    double click) creates nothing more and goes to what it created the first time.

    `create()` calls the service and returns (object, secret); `shown(object, secret)` is the
    secret page. Returns (response, form token): no response while the form is to be shown
    (again, with its errors), carrying that token.
    """
    token = request.POST.get("form_token", "") if request.method == "POST" else ""
    if request.method == "POST":
        if (done := used_form_token(request, token)) is not None:
            messages.info(request, already)
            return redirect(detail, done), token
        if form.is_valid():
            try:
                obj, secret = create()
            except ServiceError as exc:
                service_error_to_form(form, exc)
            else:
                remember_form_token(request, token, obj.public_id)
                return shown(obj, secret), token
    return None, token or new_idempotency_key()


def rotate_once(request, obj, *, rotate, detail: str, already: str, shown):
    """A POST that replaces obj's secret, the new one shown once; a re-sent form rotates
    nothing more. `rotate()` returns (object, new secret); a refusal (a ServiceError) goes back
    to obj's `detail` page with its reason."""
    token = request.POST.get("form_token", "")
    if used_form_token(request, token) is not None:
        messages.info(request, already)
        return redirect(detail, obj.public_id)
    try:
        obj, secret = rotate()
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect(detail, obj.public_id)
    remember_form_token(request, token, obj.public_id)
    return shown(obj, secret)
