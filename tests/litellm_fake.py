"""A contract fake of LiteLLM 1.106.2's database-backed admin API, for tests.

The real proxy cannot keep keys, teams or spend logs here (that needs Prisma engines this
machine cannot download; see ../shared/reference/litellm-admin-api.md, section 7), so this
fake plays it, built from that reference: the same routes, request fields, merge semantics,
response and error shapes, plus LiteLLM's failure modes on demand:

- `fail_next(500)`, `fail_next(429)`, `fail_next("timeout")`: the next admin calls fail so;
- `stop()` / `start()`: the process is gone (connection refused), then back with its state;
- duplicate key alias and team id: 400, as LiteLLM answers;
- spend-log rows are written late, as LiteLLM's batch writer does: invisible until
  `flush_spend()`; `/spend/logs/v2` pages by OFFSET ordered by startTime only, so rows with
  equal start times may swap between pages (`shuffle_ties`).

It also answers /chat/completions for virtual keys (auth, blocks, expiry, model access,
budgets, spend), so the gateway's team-key mode can be tested where the real proxy cannot.
"""

import hashlib
import json
import math
import random
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from tests.helpers.servers import POLL_SECONDS

MASTER_KEY = "sk-fake-litellm-master-0123456789"
DURATION = re.compile(r"^(\d+)(s|m|h|d|w|mo)$")
DURATION_ALIASES = {"hourly": "1h", "daily": "24h", "weekly": "7d", "monthly": "30d"}
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400}
MINIMUM_CUSTOM_KEY_LENGTH = 16
COUNT_CAP = 10_000


def hash_key(key: str) -> str:
    return key if not key.startswith("sk-") else hashlib.sha256(key.encode()).hexdigest()


def now() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def parse_duration(value: str) -> int | None:
    match = DURATION.match(DURATION_ALIASES.get(value, value))
    if not match or int(match.group(1)) <= 0:
        return None
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


class Reply(Exception):
    def __init__(self, status: int, body, headers: dict | None = None):
        self.status, self.body, self.headers = status, body, headers or {}


def proxy_error(status: int, message: str, type_: str, param=None) -> Reply:
    """LiteLLM's ProxyException envelope; `code` is the status as a string."""
    return Reply(
        status, {"error": {"message": message, "type": type_, "param": param, "code": str(status)}}
    )


def detail_error(status: int, detail) -> Reply:
    """A FastAPI HTTPException that escaped LiteLLM's wrapper: {"detail": ...}."""
    return Reply(status, {"detail": detail})


class FakeLiteLLM:
    def __init__(self, master_key: str = MASTER_KEY):
        self.master_key = master_key
        self.lock = threading.RLock()
        self.teams: dict[str, dict] = {}
        self.keys: dict[str, dict] = {}  # by hash; deleted ones stay with status "deleted"
        self.spend_rows: list[dict] = []  # visible to /spend/logs/v2
        self.pending_rows: list[dict] = []  # written at the next flush_spend()
        self.deployments: list[dict] = []
        self.failures: list = []  # what the next admin calls do instead of answering
        self.calls: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self.bodies: list[bytes] = []  # raw request bodies (for secret-leak assertions)
        self.shuffle_ties = False
        self.budget_status = 422  # 400 before 2024, 429 until 1.103, 422 since 1.104
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        self.add_model("fake-gpt", "openai/gpt-4o-mini", 0.00000015, 0.0000006)

    # --- process lifecycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeLiteLLM":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                fake._dispatch(self, "GET")

            def do_POST(self):
                fake._dispatch(self, "POST")

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that gave up (timeout tests) is not news

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": POLL_SECONDS}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """LiteLLM is down: connections are refused until start() (state is kept)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def fail_next(self, *outcomes) -> None:
        """The next admin calls answer these statuses (500, 503, 429…), or "timeout" (no
        answer in time, nothing done), or "late" (done, but the answer comes too late)."""
        with self.lock:
            self.failures.extend(outcomes)

    # --- test-side helpers ------------------------------------------------------------------

    def add_model(self, name, provider_model, input_cost, output_cost, mode="chat", **info):
        self.deployments.append(
            {
                "model_name": name,
                "litellm_params": {"model": provider_model, "api_key": "sk-***"},
                "model_info": {
                    "id": uuid.uuid4().hex,
                    "mode": mode,
                    "input_cost_per_token": input_cost,
                    "output_cost_per_token": output_cost,
                    **info,
                },
            }
        )

    def key(self, secret_or_hash: str) -> dict | None:
        return self.keys.get(hash_key(secret_or_hash))

    def live_keys(self) -> dict[str, dict]:
        return {h: k for h, k in self.keys.items() if k["status"] != "deleted"}

    def delete_key_by_hand(self, key_hash: str) -> None:
        with self.lock:
            self.keys[key_hash]["status"] = "deleted"

    def add_spend_row(self, **row) -> dict:
        """A spend-log row as LiteLLM writes it (e.g. a call made to LiteLLM directly)."""
        full = {
            "request_id": f"chatcmpl-{uuid.uuid4().hex}",
            "litellm_call_id": str(uuid.uuid4()),
            "call_type": "acompletion",
            "api_key": "",
            "spend": 0.0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 0,
            "startTime": iso(now()),
            "endTime": iso(now()),
            "model": "fake-gpt",
            "model_group": "fake-gpt",
            "team_id": "",
            "status": "success",
            "metadata": {},
            **row,
        }
        full["total_tokens"] = full["prompt_tokens"] + full["completion_tokens"]
        with self.lock:
            self.pending_rows.append(full)
        return full

    def flush_spend(self) -> None:
        """LiteLLM's batch writer runs: pending spend-log rows become visible."""
        with self.lock:
            self.spend_rows.extend(self.pending_rows)
            self.pending_rows = []

    # --- HTTP plumbing ------------------------------------------------------------------

    def _dispatch(self, handler, method: str):
        url = urlparse(handler.path)
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        with self.lock:
            self.calls.append((method, url.path))
            self.bodies.append(raw)
        try:
            body = json.loads(raw) if raw else {}
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            stream = self._route(method, url.path.removeprefix("/v1"), handler, body, query)
            if stream is not None:
                return self._send_stream(handler, stream)
            raise Reply(404, {"detail": "Not Found"})
        except Reply as reply:
            self._send(handler, reply.status, reply.body, reply.headers)
        except json.JSONDecodeError:
            self._send(handler, 422, {"detail": [{"msg": "JSON decode error"}]})

    @staticmethod
    def _send(handler, status: int, body, headers: dict | None = None):
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _send_stream(handler, frames):
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("connection", "close")
        handler.end_headers()
        for frame in frames:
            handler.wfile.write(b"data: " + frame + b"\n\n")
        handler.wfile.flush()
        handler.close_connection = True

    def _auth(self, handler) -> str:
        """The caller's key (x-litellm-api-key wins over Authorization, as in LiteLLM)."""
        value = handler.headers.get("x-litellm-api-key") or handler.headers.get("authorization")
        value = (value or "").removeprefix("Bearer ").strip()
        if not value:
            raise proxy_error(401, "Authentication Error, No api key passed in.", "auth_error")
        return value

    def _admin(self, handler) -> str | None:
        if self._auth(handler) != self.master_key:
            raise proxy_error(
                401,
                "Authentication Error, only proxy admins can call management routes.",
                "auth_error",
                "None",
            )
        with self.lock:
            outcome = self.failures.pop(0) if self.failures else None
        if outcome == "timeout":
            time.sleep(3)  # past the client's timeout in tests; the work is not done
            raise proxy_error(504, "Gateway timeout", "internal_server_error")
        if isinstance(outcome, int):
            raise proxy_error(outcome, f"Injected failure {outcome}", "internal_server_error")
        return outcome

    def _route(self, method, path, handler, body, query):
        if path in ("/health/liveliness", "/health/liveness"):
            raise Reply(200, "I'm alive!")
        if method == "POST" and path == "/chat/completions":
            return self._chat(handler, body)
        outcome = self._admin(handler)
        routes = {
            ("POST", "/team/new"): self._team_new,
            ("POST", "/team/update"): self._team_update,
            ("POST", "/team/delete"): self._team_delete,
            ("POST", "/team/block"): lambda b, q: self._team_block(b, True),
            ("POST", "/team/unblock"): lambda b, q: self._team_block(b, False),
            ("GET", "/team/info"): self._team_info,
            ("POST", "/key/generate"): self._key_generate,
            ("POST", "/key/update"): self._key_update,
            ("POST", "/key/delete"): self._key_delete,
            ("POST", "/key/block"): lambda b, q: self._key_block(b, True),
            ("POST", "/key/unblock"): lambda b, q: self._key_block(b, False),
            ("GET", "/key/info"): self._key_info,
            ("GET", "/key/list"): self._key_list,
            ("GET", "/model/info"): lambda b, q: {"data": self.deployments},
            ("GET", "/spend/logs/v2"): self._spend_logs,
        }
        route = routes.get((method, path))
        if route is None:
            raise Reply(404, {"detail": "Not Found"})
        with self.lock:
            result = route(body, query)
        if outcome == "late":
            time.sleep(3)  # the change is made; the caller gives up before hearing so
        raise Reply(200, result)

    # --- validation shared by keys and teams ----------------------------------------------

    @staticmethod
    def _check_budget_fields(body: dict) -> None:
        budget = body.get("max_budget")
        if budget is not None and (
            not isinstance(budget, int | float) or not math.isfinite(budget) or budget < 0
        ):
            raise proxy_error(
                400, "max_budget must be a finite number >= 0", "bad_request_error", "max_budget"
            )
        duration = body.get("budget_duration")
        if duration is not None and parse_duration(duration) is None:
            raise proxy_error(
                400,
                f"Invalid budget_duration '{duration}'. Use a format like '1h', '24h', '7d', "
                "or '30d'.",
                "bad_request_error",
                "budget_duration",
            )

    @staticmethod
    def _reset_at(duration: str | None) -> str | None:
        if not duration:
            return None
        return iso(now() + timedelta(seconds=parse_duration(duration)))

    # --- teams ------------------------------------------------------------------------------

    TEAM_FIELDS = (
        "team_alias", "organization_id", "models", "max_budget", "budget_duration", "tpm_limit",
        "rpm_limit", "max_parallel_requests", "blocked", "metadata", "soft_budget",
    )  # fmt: skip

    def _team_new(self, body, query):
        self._check_budget_fields(body)
        team_id = body.get("team_id") or str(uuid.uuid4())
        if team_id in self.teams:
            raise proxy_error(
                400,
                f"Team id = {team_id} already exists. Please use a different team id.",
                "bad_request_error",
                "team_id",
            )
        team = {f: body.get(f) for f in self.TEAM_FIELDS}
        team.update(
            team_id=team_id,
            models=body.get("models") or [],
            metadata=body.get("metadata") or {},
            blocked=bool(body.get("blocked")),
            spend=0.0,
            budget_reset_at=self._reset_at(body.get("budget_duration")),
            created_at=iso(now()),
            updated_at=iso(now()),
        )
        self.teams[team_id] = team
        return team

    def _team(self, team_id) -> dict:
        team = self.teams.get(team_id or "")
        if team is None:
            raise detail_error(404, {"error": f"Team not found, passed team_id={team_id}"})
        return team

    def _team_update(self, body, query):
        if not body.get("team_id"):
            raise detail_error(400, {"error": "No team id passed in"})
        team = self._team(body["team_id"])
        self._check_budget_fields(body)
        for f in self.TEAM_FIELDS:
            if f in body:
                team[f] = body[f]
        if "budget_duration" in body:
            team["budget_reset_at"] = self._reset_at(body["budget_duration"])
        team["updated_at"] = iso(now())
        return team

    def _team_block(self, body, blocked: bool):
        team = self._team(body.get("team_id"))
        team["blocked"] = blocked
        return team

    def _team_delete(self, body, query):
        ids = body.get("team_ids") or []
        for team_id in ids:
            self._team(team_id)
        for team_id in ids:
            del self.teams[team_id]
            for key in self.keys.values():  # "deletes the team and associated team keys"
                if key["team_id"] == team_id:
                    key["status"] = "deleted"
        return {"deleted_teams": ids}

    def _team_info(self, body, query):
        team_id = query.get("team_id")
        if not team_id:
            raise detail_error(422, {"message": "Malformed request. No team id passed in."})
        if team_id not in self.teams:
            raise proxy_error(
                404,
                f"Team not found, passed team id: {team_id}.",
                "not_found_error",
                "team_id",
            )
        team = self.teams[team_id]
        keys = [self._public(k) for k in self.live_keys().values() if k["team_id"] == team_id]
        return {"team_id": team_id, "team_info": team, "keys": keys, "team_memberships": []}

    # --- keys -------------------------------------------------------------------------------

    KEY_FIELDS = (
        "key_alias", "team_id", "user_id", "models", "max_budget", "budget_duration",
        "soft_budget", "tpm_limit", "rpm_limit", "max_parallel_requests", "metadata", "blocked",
        "aliases", "key_type",
    )  # fmt: skip

    @staticmethod
    def _public(key: dict) -> dict:
        return {k: v for k, v in key.items() if k != "token"}

    def _alias_taken(self, alias, except_hash=None) -> None:
        if not alias:
            return
        for h, k in self.live_keys().items():
            if k["key_alias"] == alias and h != except_hash:
                raise proxy_error(
                    400,
                    f"Key with alias '{alias}' already exists. Unique key aliases across all "
                    "keys are required.",
                    "bad_request_error",
                    "key_alias",
                )

    @staticmethod
    def _expires(duration) -> str | None:
        if duration in (None, "-1"):
            return None
        seconds = parse_duration(duration)
        if seconds is None:
            raise proxy_error(400, f"Invalid duration {duration}", "bad_request_error", "duration")
        return iso(now() + timedelta(seconds=seconds))

    def _key_generate(self, body, query):
        self._check_budget_fields(body)
        secret = body.get("key") or "sk-" + uuid.uuid4().hex
        if not secret.startswith("sk-") or len(secret) < MINIMUM_CUSTOM_KEY_LENGTH:
            raise proxy_error(
                400,
                f"Invalid key format. LiteLLM Virtual Key must start with 'sk-' and be at least "
                f"{MINIMUM_CUSTOM_KEY_LENGTH} characters.",
                "bad_request_error",
                "key",
            )
        self._alias_taken(body.get("key_alias"))
        token = hash_key(secret)
        if token not in self.keys or self.keys[token]["status"] == "deleted":
            # An upsert on the hash with an empty update: re-posting a key changes nothing.
            row = {f: body.get(f) for f in self.KEY_FIELDS}
            row.update(
                token=token,
                key_name=f"sk-...{secret[-4:]}",
                models=body.get("models") or [],
                metadata=body.get("metadata") or {},
                blocked=bool(body.get("blocked")),
                spend=0.0,
                total_spend=0.0,
                expires=self._expires(body.get("duration")),
                budget_reset_at=self._reset_at(body.get("budget_duration")),
                status="active",
                created_at=iso(now()),
            )
            self.keys[token] = row
        # The response echoes the *requested* fields, and the plaintext, this once.
        return {
            **{f: body.get(f) for f in self.KEY_FIELDS},
            "key": secret,
            "token": token,
            "token_id": token,
            "key_name": f"sk-...{secret[-4:]}",
            "expires": self.keys[token]["expires"],
        }

    def _find_key(self, body) -> dict:
        ident = body.get("key")
        if ident:
            key = self.keys.get(hash_key(ident))
        elif body.get("key_alias"):
            matches = [k for k in self.live_keys().values() if k["key_alias"] == body["key_alias"]]
            key = matches[0] if len(matches) == 1 else None
        else:
            raise proxy_error(
                400, "either key or key_alias must be provided", "bad_request_error", "key"
            )
        if key is None or key["status"] == "deleted":
            raise proxy_error(404, "Key not found in database", "not_found_error", "key")
        return key

    def _key_update(self, body, query):
        key = self._find_key(body)
        self._check_budget_fields(body)
        if "key_alias" in body and body.get("key"):
            self._alias_taken(body["key_alias"], except_hash=key["token"])
        for f in self.KEY_FIELDS:
            if f in body and not (f == "team_id" and body[f] == ""):
                key[f] = body[f]  # metadata replaces the stored one wholesale
        if "duration" in body:
            key["expires"] = self._expires(body["duration"])
        if "budget_duration" in body:
            key["budget_reset_at"] = self._reset_at(body["budget_duration"])
        if "spend" in body:
            key["spend"] = float(body["spend"])
        return self._public(key)

    def _key_block(self, body, blocked: bool):
        key = self._find_key(body)
        key["blocked"] = blocked
        return self._public(key)

    def _key_delete(self, body, query):
        hashes = [hash_key(k) for k in body.get("keys") or []]
        for alias in body.get("key_aliases") or []:
            hashes += [h for h, k in self.live_keys().items() if k["key_alias"] == alias]
        if not hashes:
            raise proxy_error(
                400, "Either keys or key_aliases must be provided", "bad_request_error", "keys"
            )
        missing = [h for h in hashes if h not in self.live_keys()]
        if missing:
            raise proxy_error(
                404, f"Key not found in database: {missing[0]}", "not_found_error", "keys"
            )
        for h in hashes:
            self.keys[h]["status"] = "deleted"
        return {"deleted_keys": body.get("keys") or body.get("key_aliases")}

    def _key_info(self, body, query):
        ident = query.get("key")
        key = self.keys.get(hash_key(ident or ""))
        if key is None:
            raise proxy_error(404, "Key not found in database", "not_found_error", "key")
        info = self._public(key)
        if key["status"] == "active" and key["expires"] and key["expires"] < iso(now()):
            info["status"] = "expired"
        return {"key": ident, "info": info}

    def _key_list(self, body, query):
        page, size = int(query.get("page", 1)), int(query.get("size", 10))
        if page < 1 or not 1 <= size <= 100:
            raise detail_error(422, [{"msg": "page >= 1 and 1 <= size <= 100"}])
        rows = [
            k
            for k in self.live_keys().values()
            if not query.get("team_id") or k["team_id"] == query["team_id"]
        ]
        chunk = rows[(page - 1) * size : page * size]
        full = query.get("return_full_object") == "true"
        return {
            "keys": [dict(k) for k in chunk] if full else [k["token"] for k in chunk],
            "total_count": len(rows),
            "current_page": page,
            "total_pages": max(1, math.ceil(len(rows) / size)),
        }

    # --- spend logs ---------------------------------------------------------------------

    @staticmethod
    def _log_time(value: str, field: str) -> str:
        for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
            try:
                return iso(datetime.strptime(value, fmt).replace(tzinfo=UTC))
            except (TypeError, ValueError):
                continue
        raise proxy_error(
            400, f"{field} must be 'YYYY-MM-DD HH:MM:SS' or 'YYYY-MM-DD'", "bad_request_error"
        )

    def _spend_logs(self, body, query):
        if not query.get("start_date") or not query.get("end_date"):
            raise proxy_error(
                400, "start_date and end_date are required", "bad_request_error", "start_date"
            )
        start = self._log_time(query["start_date"], "start_date")
        # Second granularity, inclusive: the end second is included whole.
        end = self._log_time(query["end_date"], "end_date")[:19]
        page, size = int(query.get("page", 1)), int(query.get("page_size", 50))
        if page < 1 or not 1 <= size <= 1000:
            raise detail_error(422, [{"msg": "page >= 1 and 1 <= page_size <= 1000"}])
        rows = [r for r in self.spend_rows if start[:19] <= r["startTime"][:19] <= end]
        if query.get("api_key"):
            rows = [r for r in rows if r["api_key"] == query["api_key"]]
        if query.get("team_id"):
            rows = [r for r in rows if r["team_id"] == query["team_id"]]
        # Ordered by startTime (to the second) and nothing else: ties have no stable order.
        rows.sort(key=lambda r: (r["startTime"][:19], random.random() if self.shuffle_ties else 0))
        if query.get("sort_order") == "desc":
            rows.reverse()
        total = len(rows)
        return {
            "data": rows[(page - 1) * size : page * size],
            "total": min(total, COUNT_CAP),
            "page": page,
            "page_size": size,
            "total_pages": math.ceil(min(total, COUNT_CAP) / size),
            "total_is_capped": total > COUNT_CAP,
        }

    # --- the LLM route, for the gateway's team-key mode -----------------------------------

    def _chat(self, handler, body):
        secret = self._auth(handler)
        model = body.get("model")
        deployment = next((d for d in self.deployments if d["model_name"] == model), None)
        with self.lock:
            key = team = None
            if secret != self.master_key:
                key, team = self._check_key(secret, model)
            if deployment is None:
                raise proxy_error(
                    400, f"Invalid model name passed in model={model}.", "invalid_request_error"
                )
            info = deployment["model_info"]
            prompt, completion = 10, 20  # LiteLLM's mock usage
            cost = (
                prompt * info["input_cost_per_token"] + completion * info["output_cost_per_token"]
            )
            for obj in (key, team):
                if obj is not None:
                    obj["spend"] = obj.get("spend", 0.0) + cost
                    if "total_spend" in obj:
                        obj["total_spend"] += cost
            call_id = handler.headers.get("x-litellm-call-id") or str(uuid.uuid4())
            rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
            self.pending_rows.append(
                {
                    "request_id": rid,
                    "litellm_call_id": call_id,
                    "call_type": "acompletion",
                    "api_key": hash_key(secret),
                    "spend": cost,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                    "startTime": iso(now()),
                    "endTime": iso(now()),
                    "model": info.get("id", ""),
                    "model_group": model,
                    "team_id": (key or {}).get("team_id") or "",
                    "status": "success",
                    "metadata": {"user_api_key_alias": (key or {}).get("key_alias")},
                }
            )
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}  # fmt: skip
        if body.get("stream"):
            base = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": model}  # fmt: skip
            frames = [
                {**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                            "content": "fake reply"}}]},
                {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            ]  # fmt: skip
            if (body.get("stream_options") or {}).get("include_usage"):
                frames.append({**base, "choices": [{"index": 0, "delta": {}}],
                               "usage": {**usage, "cost": cost}})  # fmt: skip
            return [json.dumps(f).encode() for f in frames] + [b"[DONE]"]
        raise Reply(
            200,
            {
                "id": rid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "fake reply"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
            {"x-litellm-response-cost": str(cost), "x-litellm-call-id": call_id},
        )

    def _check_key(self, secret: str, model) -> tuple[dict, dict | None]:
        if not secret.startswith("sk-"):
            raise proxy_error(
                401,
                "Authentication Error, LiteLLM Virtual Key expected. Received="
                f"{secret[:4]}..., expected to start with 'sk-'.",
                "auth_error",
                "None",
            )
        key = self.keys.get(hash_key(secret))
        if key is None or key["status"] == "deleted":
            raise proxy_error(
                401,
                f"Authentication Error, Invalid proxy server token passed. key={hash_key(secret)}"
                ", not found in db. Create key via `/key/generate` call.",
                "token_not_found_in_db",
                "key",
            )
        if key["blocked"]:
            raise proxy_error(
                401,
                "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an "
                "admin.",
                "auth_error",
                "None",
            )
        if key["expires"] and key["expires"] < iso(now()):
            raise proxy_error(
                401,
                f"Authentication Error - Expired Key. Key Expiry time {key['expires']} and "
                f"current time {iso(now())}",
                "expired_key",
                "None",
            )
        team = self.teams.get(key["team_id"] or "")
        if team is not None and team["blocked"]:
            raise proxy_error(
                401,
                f"Authentication Error, Team={team['team_id']} is blocked. Update via "
                "`/team/unblock` if you're an admin.",
                "auth_error",
                "None",
            )
        for obj, type_ in ((key, "key_model_access_denied"), (team, "team_model_access_denied")):
            if obj is not None and obj["models"] and model not in obj["models"]:
                raise proxy_error(
                    403,
                    f"You are not allowed to access model={model}. Contact your proxy admin.",
                    type_,
                    "model",
                )
        for obj, label in ((key, "Key"), (team, "Team")):
            if (
                obj is not None
                and obj["max_budget"] is not None
                and obj["spend"] >= obj["max_budget"]
            ):
                ident = key["key_alias"] if label == "Key" else team["team_id"]
                raise proxy_error(
                    self.budget_status,
                    f"Budget has been exceeded! {label}={ident} Current cost: "
                    f"{obj['spend']}, Max budget: {obj['max_budget']}",
                    "budget_exceeded",
                )
        return key, team
