"""Who is calling: the presented secret, its key snapshot and the key's team."""

import hashlib
import time

from livestate.snapshots import KeySnapshot, TeamSnapshot
from proxy.errors import GatewayError
from proxy.refusals import SCOPE_KEY
from proxy.replica import Replica


def presented_secret(scope) -> bytes | None:
    """The caller's API key, from `Authorization: Bearer` or `x-api-key`."""
    secret = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if value[:7].lower() == b"bearer ":
                # Bearer wins over x-api-key; another scheme must not hide it.
                return value[7:].strip()
        elif name == b"x-api-key":
            secret = value.strip()
    return secret


async def authenticate(replica: Replica, scope) -> tuple[KeySnapshot, TeamSnapshot]:
    secret = presented_secret(scope)
    if not secret:
        raise GatewayError(
            401,
            "Send your API key as 'Authorization: Bearer sk-…'.",
            "invalid_request_error",
            "missing_api_key",
        )
    digest = hashlib.sha256(secret).hexdigest()
    key = await replica.key(digest)
    invalid = GatewayError(
        401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
    )
    if key is None:
        raise invalid
    scope[SCOPE_KEY] = key  # whose call it is, should it be refused (proxy/refusals.py)
    now = time.time()
    # Dict lookup by hash, then an explicit check of which hash matched: the secret itself
    # is never compared, so there is no timing signal about it.
    in_grace = digest == key.prev_hash and key.prev_until and now < key.prev_until
    if digest != key.hash and not in_grace:
        raise GatewayError(
            401,
            "This API key was rotated and its grace period is over; use the new key.",
            "invalid_request_error",
            "key_rotated",
        )
    if key.status == "revoked":
        raise GatewayError(401, "This API key was revoked.", "invalid_request_error", "key_revoked")
    if key.status == "expired" or (key.expires and now >= key.expires):
        raise GatewayError(401, "This API key has expired.", "invalid_request_error", "key_expired")
    team = await replica.team(key.team)
    if team is None:
        raise invalid
    if team.status == "suspended":
        raise GatewayError(
            403,
            "This team is suspended; contact your provider.",
            "team_suspended",
            "team_suspended",
        )
    if team.status == "paused":
        raise GatewayError(
            403,
            "This team is paused; resume it to send requests.",
            "team_paused",
            "team_paused",
        )
    return key, team
