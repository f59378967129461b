"""Secrets out of any text that leaves Tollgate: logged bodies, upstream errors, API answers.

Two kinds of secret:
- the secrets Tollgate stores (every upstream's provider key, the master keys), matched exactly
  as literals: a provider key need not look like one (`sk-…`), so no pattern would find them all;
- Tollgate's own key formats (virtual `sk-…`, admin `tga-…`, master `tgm-…`), by pattern, so a
  customer's or another deployment's key is caught too.

A Redactor is built once per set of secrets (the gateway: once per catalog load) and runs only
where text is logged or shown, never on a plain call. Literals are found with `str.find`, one C
scan each, then the pattern runs once: for a 64 KiB body that measured about 1 ms with 1 secret
and 3 ms with 100, against 2.7 ms and 39 ms for one regex alternation of the escaped secrets
(which tries every secret at every position: keys share no first characters to skip by).
"""

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
TOLLGATE_KEY_PATTERN = re.compile(r"(?:sk|tga|tgm)-[A-Za-z0-9_\-]{8,}")
# Shorter stored values are placeholders, not secrets (local upstreams are given "none" or
# "dummy"); replacing every "none" in a logged body would mangle it and hide nothing.
MIN_SECRET_LENGTH = 8


class Redactor:
    """Replaces every given secret, and every Tollgate key, with REDACTED."""

    __slots__ = ("_literals",)

    def __init__(self, secrets: Iterable[str] = ()):
        literals = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
        # Longest first: a secret that contains another is replaced whole.
        self._literals = tuple(sorted(literals, key=lambda s: (-len(s), s)))

    def __call__(self, text: str) -> str:
        for secret in self._literals:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return TOLLGATE_KEY_PATTERN.sub(REDACTED, text)


# Tollgate's key formats alone: where no stored secret is known.
redact_tollgate_keys = Redactor()
