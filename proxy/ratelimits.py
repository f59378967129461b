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


def openai_headers(headroom: Headroom, now_ms: int) -> list[tuple[bytes, bytes]]:
    seconds = -(-(_reset_at_ms(now_ms) - now_ms) // 1000)
    reset = f"{seconds // 60}m{seconds % 60}s".encode()
    headers = []
    if headroom.rpm >= 0:
        headers += [
            (b"x-ratelimit-limit-requests", b"%d" % headroom.rpm),
            (b"x-ratelimit-remaining-requests", b"%d" % headroom.requests_left),
            (b"x-ratelimit-reset-requests", reset),
        ]
    if headroom.tpm >= 0:
        headers += [
            (b"x-ratelimit-limit-tokens", b"%d" % headroom.tpm),
            (b"x-ratelimit-remaining-tokens", b"%d" % headroom.tokens_left),
            (b"x-ratelimit-reset-tokens", reset),
        ]
    return headers


def anthropic_headers(headroom: Headroom, now_ms: int) -> list[tuple[bytes, bytes]]:
    at = time.gmtime(_reset_at_ms(now_ms) // 1000)
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", at).encode()
    headers = []
    if headroom.rpm >= 0:
        headers += [
            (b"anthropic-ratelimit-requests-limit", b"%d" % headroom.rpm),
            (b"anthropic-ratelimit-requests-remaining", b"%d" % headroom.requests_left),
            (b"anthropic-ratelimit-requests-reset", reset),
        ]
    if headroom.tpm >= 0:
        headers += [
            (b"anthropic-ratelimit-tokens-limit", b"%d" % headroom.tpm),
            (b"anthropic-ratelimit-tokens-remaining", b"%d" % headroom.tokens_left),
            (b"anthropic-ratelimit-tokens-reset", reset),
        ]
    return headers
