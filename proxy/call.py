"""One completion request as every stage sees it, built once after authentication and routing."""

from livestate.snapshots import KeySnapshot, TeamSnapshot
from proxy.apis.base import Api
from proxy.replica import Group, Route


class Call:
    """The request's context, passed to each stage instead of a dozen parameters."""

    __slots__ = (
        "api",
        "body",
        "caller_auth",
        "end_user",
        "group",
        "job_id",
        "key",
        "lease",
        "lookup",
        "mode",
        "path",
        "rate_headers",
        "receive",
        "request",
        "rid",
        "routes",
        "scope",
        "send",
        "started",
        "stream",
        "tags",
        "team",
        "wants_usage",
    )

    def __init__(
        self,
        *,
        rid: str,
        scope: dict,
        receive,
        send,
        key: KeySnapshot,
        team: TeamSnapshot,
        request: dict,
        body: bytes,
        api: Api,
        path: str,
        routes: list[Route],
        group: Group | None,
    ):
        self.rid, self.scope, self.receive, self.send = rid, scope, receive, send
        self.key, self.team, self.request, self.body = key, team, request, body
        self.api, self.mode, self.path = api, api.mode, path
        self.routes, self.group = routes, group
        self.stream = api.streams(request)
        options = request.get("stream_options")
        self.wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        self.job_id: str | None = None  # set by admission.require_job
        self.lookup = None  # a cache.CacheLookup when the response cache is on for this call
        self.caller_auth: str | None = None  # forwarded to upstreams with key_mode caller
        self.started = 0.0  # unix time of admission
        self.lease = None  # a streamed call's proxy.leases.Lease, set by admission.admit
        # The rate-limit headers every answer of the admitted call carries (Api.rate_headers),
        # set by admission.admit when the key or the team sets a rate limit.
        self.rate_headers: list | tuple = ()
        self.end_user = ""  # who the call is for, and the caller's labels (proxy/attribution)
        self.tags: tuple[str, ...] = ()
