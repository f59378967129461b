"""The rate-limit headers of an admitted call's answers, from what its ADMIT left
(livestate.scripts.Headroom): OpenAI's `x-ratelimit-*` on every API, Anthropic's
`anthropic-ratelimit-*` as well on its Messages API (proxy/apis/messages.py).

The counters are sliding windows of a minute (livestate/scripts.py): what a call counts stays
whole until the end of its minute, then fades out over the next one. So a limit is back to its
initial state ("reset", in both vendors' words) at the end of the minute after the call's: in
61 to 120 s, told as OpenAI's duration ("1m30s", whole seconds rounded up) or Anthropic's
RFC 3339 time. Only the limits set are told: no header for an unlimited dimension.
"""

import time

from livestate.scripts import Headroom


def _reset_at_ms(now_ms: int) -> int:
    """When what a call counted at `now_ms` has left the window: the end of the next minute."""
    return (now_ms // 60_000 + 2) * 60_000


def _names(template: str) -> tuple[tuple[bytes, bytes, bytes], tuple[bytes, bytes, bytes]]:
    """(limit, remaining, reset) header names for requests, then for tokens."""
    return tuple(
        tuple(template.format(unit=unit, what=what).encode() for what in WHATS)
        for unit in ("requests", "tokens")
    )


WHATS = ("limit", "remaining", "reset")
OPENAI_NAMES = _names("x-ratelimit-{what}-{unit}")
ANTHROPIC_NAMES = _names("anthropic-ratelimit-{unit}-{what}")


def _headers(headroom: Headroom, names, reset: bytes) -> list[tuple[bytes, bytes]]:
    headers = []
    for (limit_name, left_name, reset_name), limit, left in zip(
        names,
        (headroom.rpm, headroom.tpm),
        (headroom.requests_left, headroom.tokens_left),
        strict=True,
    ):
        if limit >= 0:  # only the limits set
            headers += [(limit_name, b"%d" % limit), (left_name, b"%d" % left), (reset_name, reset)]
    return headers


def openai_headers(headroom: Headroom, now_ms: int) -> list[tuple[bytes, bytes]]:
    seconds = -(-(_reset_at_ms(now_ms) - now_ms) // 1000)
    return _headers(headroom, OPENAI_NAMES, f"{seconds // 60}m{seconds % 60}s".encode())


def anthropic_headers(headroom: Headroom, now_ms: int) -> list[tuple[bytes, bytes]]:
    at = time.gmtime(_reset_at_ms(now_ms) // 1000)
    return _headers(headroom, ANTHROPIC_NAMES, time.strftime("%Y-%m-%dT%H:%M:%SZ", at).encode())
