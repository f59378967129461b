"""Who a call is for and how the caller labels it: the end user and the request tags.

The end user is the OpenAI `user` field (any API that has it) or, on Anthropic Messages,
`metadata.user_id`. Tags come from `metadata.tags` (a list of strings) and the
`x-tollgate-tags` header (comma-separated), merged in that order without repeats. Both are
bounded, since they are stored with every call and grouped by: at most MAX_TAGS tags of at
most MAX_TAG_CHARS characters from TAG_CHARS, an end user of at most MAX_USER_CHARS characters.
A call past a bound is refused with a 400 naming the field, before anything is reserved.

`metadata.tags` is Tollgate's, not the provider's: it is taken out of the request before it is
forwarded (OpenAI's metadata takes string values only, Anthropic's only `user_id`).
"""

import re

from proxy.errors import GatewayError

MAX_TAGS = 10
MAX_TAG_CHARS = 64
MAX_USER_CHARS = 256
TAG_CHARS = re.compile(r"[A-Za-z0-9_.:/@+=-]+")
HEADER = b"x-tollgate-tags"


def _bad(field: str, message: str) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", "invalid_attribution", field)


def end_user(request: dict) -> str:
    """The call's end user ("" for none)."""
    field, user = "user", request.get("user")
    if user is None:
        metadata = request.get("metadata")
        if isinstance(metadata, dict) and "user_id" in metadata:
            field, user = "metadata.user_id", metadata["user_id"]
    if user is None:
        return ""
    if not isinstance(user, str):
        raise _bad(field, f"'{field}' must be a string naming your end user.")
    if len(user) > MAX_USER_CHARS:
        raise _bad(field, f"'{field}' is at most {MAX_USER_CHARS} characters.")
    return user


def tags(scope, request: dict) -> tuple[str, ...]:
    """The call's tags, in order, each once; `metadata.tags` is removed from the request."""
    found: list[str] = []
    metadata = request.get("metadata")
    if isinstance(metadata, dict) and "tags" in metadata:
        listed = metadata.pop("tags")
        if not metadata:
            del request["metadata"]
        if not isinstance(listed, list) or not all(isinstance(t, str) for t in listed):
            raise _bad("metadata.tags", "'metadata.tags' must be an array of strings.")
        found.extend(_checked(t, "metadata.tags") for t in listed)
    for name, value in scope["headers"]:
        if name == HEADER:
            header = value.decode("latin-1")
            found.extend(
                _checked(t.strip(), "x-tollgate-tags") for t in header.split(",") if t.strip()
            )
    unique = tuple(dict.fromkeys(found))
    if len(unique) > MAX_TAGS:
        raise _bad("metadata.tags", f"A call has at most {MAX_TAGS} tags; it has {len(unique)}.")
    return unique


def _checked(tag: str, field: str) -> str:
    if len(tag) > MAX_TAG_CHARS or not TAG_CHARS.fullmatch(tag):
        raise _bad(
            field,
            f"Tag {tag[:MAX_TAG_CHARS]!r} is not valid: at most {MAX_TAG_CHARS} characters, "
            "letters, digits and _ . : / @ + = - only.",
        )
    return tag
