"""Small helpers every panel view uses."""

from django.shortcuts import get_object_or_404

from panel.access import actor_for

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
