"""The gateway as a client sees it: its error shape, its Redis state, refusals that arrive
through the change feed."""

import asyncio

import httpx

from tests.helpers.waiting import eventually


def concurrently(url: str, path: str, headers: dict, body: dict, n: int) -> list[httpx.Response]:
    """`n` identical POSTs to the gateway at once, each on its own connection."""

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            return await asyncio.gather(
                *(client.post(f"{url}{path}", headers=headers, json=body) for _ in range(n))
            )

    return asyncio.run(fire())


def assert_error(r, status: int, type_: str, code: str | None) -> dict:
    """OpenAI's error shape, exactly, and never an HTML page (r: an httpx.Response)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"].startswith("req_")
    assert "<html" not in r.text.lower()
    body = r.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert (error["type"], error["code"]) == (type_, code)
    return error


def redis_account(team) -> dict:
    """The gateway's copy of the team's credit account, as integers (without its keys')."""
    from core.redis import client
    from livestate.keys import acct_key

    raw = client().hgetall(acct_key(team.pk))
    return {k.decode(): int(v) for k, v in raw.items() if not k.startswith(b"k")}


def redis_key_account(key) -> dict:
    """The gateway's copy of a key's account ({spent, resv}, the fields present), as integers:
    fields of its team's account hash."""
    from core.redis import client
    from livestate.keys import acct_key, key_fields

    spent, resv = client().hmget(acct_key(key.team_id), key_fields(key.pk))
    return {
        name: int(value) for name, value in (("spent", spent), ("resv", resv)) if value is not None
    }


def until_refused(send, *, within: float = 1.0, since: float | None = None, error=None):
    """Repeat one call until the gateway refuses it, and return the refusal.

    A control-plane change reaches the gateway through its change feed (polled every
    GATEWAY_REFRESH_SECONDS), so "at once" means within `within` seconds of `since` (a
    time.monotonic() reading taken before the change; default: now). `send()` returns an
    httpx.Response, refused when its status is not 200; or, with `error` (an SDK exception
    class), it makes an SDK call, refused when it raises that error.
    """

    def refusal():
        if error is None:
            response = send()
            return response if response.status_code != 200 else None
        try:
            send()
        except error as exc:
            return exc
        return None

    return eventually(refusal, timeout=within, since=since, what="a refusal")
