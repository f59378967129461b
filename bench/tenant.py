"""The gateway's bench tenant, built through the real services in the bench database.

Run in a subprocess with DATABASE_URL and REDIS_URL pointing at the bench's own database and
Redis db: `python -m bench.tenant --upstream http://127.0.0.1:PORT --key-file F`. Idempotent:
a second run moves the upstreams to the new port and reuses the key kept in the key file.
Prints {"key": ..., "chat_model": ..., "stream_model": ...} as the last line of stdout.

Limits are set far above what a 2-core machine can send, so they are checked on every call but
never hit; the team's credits likewise cover any run (prices are real, so reservation and
settlement do real arithmetic).
"""

import argparse
import json
import os
import uuid
from pathlib import Path

from core.redis import client as redis_client

ACTOR = "system:bench"
CHAT_MODEL, STREAM_MODEL = "bench-chat", "bench-stream"
CHAT_GROUP, STREAM_GROUP = "bench", "bench-stream"
UPSTREAM_API_KEY = "sk-bench-upstream"  # nginx ignores it; the gateway still sends it
HIGH_RATE = 1_000_000_000  # requests or tokens per minute: never reached
CREDITS_MICROS = 10**15  # a billion credits
TOP_UP_BELOW_MICROS = 10**14


def setup(upstream: str, key_file: Path, flush_redis: bool) -> dict:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
    django.setup()

    from billing.services import credits_grant
    from core.secrets import hash_secret
    from mirrors import gateway as gateway_state
    from modelgroups import services as catalog
    from modelgroups.models import Model, ModelGroup, Upstream
    from orgs.services import organization_create
    from teams.models import Team, VirtualKey
    from teams.services import key_create, key_revoke, team_create, team_update

    if flush_redis:
        # The bench's Redis db is its own: start from a snapshot of Postgres, not old runs.
        redis_client().flushdb()

    models = {}
    for model_name, base in ((CHAT_MODEL, "/v1"), (STREAM_MODEL, "/stream/v1")):
        up_name, base_url = f"{model_name}-upstream", upstream.rstrip("/") + base
        up = Upstream.objects.filter(name=up_name).first()
        if up is None:
            up = catalog.upstream_create(
                actor=ACTOR,
                name=up_name,
                kind=Upstream.Kind.OPENAI,
                base_url=base_url,
                api_key=UPSTREAM_API_KEY,
            )
        elif up.base_url != base_url:
            catalog.upstream_update(actor=ACTOR, upstream=up, data={"base_url": base_url})
        models[model_name] = Model.objects.filter(name=model_name).first() or catalog.model_create(
            actor=ACTOR,
            name=model_name,
            upstream=up,
            upstream_model=model_name,
            input_cost_micros=150_000,
            output_cost_micros=600_000,
            max_output_tokens=256,
        )
    groups = [
        ModelGroup.objects.filter(name=name).first()
        or catalog.model_group_create(actor=ACTOR, name=name, members=[{"model": models[model]}])
        for name, model in ((CHAT_GROUP, CHAT_MODEL), (STREAM_GROUP, STREAM_MODEL))
    ]

    org, _ = organization_create(actor=ACTOR, name="Bench Org", external_id="bench")
    limits = {
        "rpm_limit": HIGH_RATE,
        "tpm_limit": HIGH_RATE,
        "max_parallel_requests": 100_000,
        "budget_period": Team.BudgetPeriod.MONTHLY,
        "budget_limit_micros": CREDITS_MICROS,
        "budget_mode": Team.LimitMode.HARD,
    }
    team = Team.objects.filter(organization=org, name="Bench Team").first()
    if team is None:
        team = team_create(
            actor=ACTOR, organization=org, name="Bench Team", model_groups=groups, **limits
        )
    else:
        team = team_update(actor=ACTOR, team=team, data=dict(limits), model_groups=groups)
    team.account.refresh_from_db()
    if team.account.balance_micros < TOP_UP_BELOW_MICROS:
        credits_grant(
            team=team,
            amount_micros=CREDITS_MICROS,
            reason="Bench credits",
            actor=ACTOR,
            idempotency_key=f"bench-{uuid.uuid4()}",
        )

    secret = key_file.read_text().strip() if key_file.exists() else ""
    active = list(VirtualKey.objects.filter(team=team, status=VirtualKey.Status.ACTIVE))
    if not secret or not any(k.key_hash == hash_secret(secret) for k in active):
        for old in active:
            key_revoke(actor=ACTOR, key=old)
        _, secret = key_create(
            actor=ACTOR, team=team, name="bench", rpm_limit=HIGH_RATE, tpm_limit=HIGH_RATE
        )
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secret + "\n")
        key_file.chmod(0o600)

    # Everything the gateway loads at start, in one consistent snapshot.
    gateway_state.publish_all()
    return {"key": secret, "chat_model": CHAT_GROUP, "stream_model": STREAM_GROUP}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tenant")
    parser.add_argument("--upstream", required=True, help="base URL of the fake upstream")
    parser.add_argument("--key-file", type=Path, required=True)
    parser.add_argument("--flush-redis", action="store_true")
    args = parser.parse_args()
    print(json.dumps(setup(args.upstream, args.key_file, args.flush_redis)))


if __name__ == "__main__":
    main()
