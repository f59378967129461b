"""Idempotent demo tenant for `make run`: an org, a team, a mock model group, credits, a key."""

import os
import re

from django.conf import settings
from django.core.management.base import BaseCommand

from billing.services import credits_grant
from core.secrets import hash_secret
from modelgroups import services as catalog
from modelgroups.models import Model, ModelGroup, Upstream
from orgs.models import Organization
from orgs.services import organization_create
from teams.models import Team, VirtualKey
from teams.services import key_create, key_revoke, team_create, team_update

ACTOR = "system:seed_demo"
ENV_FILE = settings.BASE_DIR / ".env"
# The address seed_demo gives the mock upstream: this server's own /mock (`make run` passes
# PORT through the environment).
DEMO_MOCK_URL = re.compile(r"^http://127\.0\.0\.1:\d+/mock/v1$")


def default_port() -> int:
    return int(os.environ.get("PORT") or 8000)


def _set_env(name: str, value: str) -> None:
    text = ENV_FILE.read_text() if ENV_FILE.exists() else ""
    line = f"{name}={value}"
    text, n = re.subn(rf"^{name}=.*$", line, text, flags=re.M)
    if not n:
        text += ("" if text.endswith("\n") or not text else "\n") + line + "\n"
    ENV_FILE.write_text(text)


class Command(BaseCommand):
    help = "Create (or confirm) the demo tenant; safe to run any number of times."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=default_port())

    def handle(self, *args, port, **options):
        mock_url = f"http://127.0.0.1:{port}/mock/v1"
        upstream = Upstream.objects.filter(name="mock").first() or catalog.upstream_create(
            actor=ACTOR, name="mock", kind=Upstream.Kind.MOCK, base_url=mock_url
        )
        if upstream.base_url != mock_url and DEMO_MOCK_URL.match(upstream.base_url):
            # Seeded for another port by an earlier run: follow this one (an address someone
            # set by hand is left alone).
            upstream = catalog.upstream_update(
                actor=ACTOR, upstream=upstream, data={"base_url": mock_url}
            )
        models = []
        for name, mode, cost_in, cost_out in (
            ("mock-gpt", Model.Mode.CHAT, 150_000, 600_000),
            ("mock-gpt-mini", Model.Mode.CHAT, 50_000, 200_000),
            ("mock-embed", Model.Mode.EMBEDDING, 20_000, 0),
        ):
            model = Model.objects.filter(name=name).first() or catalog.model_create(
                actor=ACTOR,
                name=name,
                upstream=upstream,
                upstream_model=name,
                mode=mode,
                input_cost_micros=cost_in,
                output_cost_micros=cost_out,
                context_window=128_000,
            )
            models.append(model)
        group = ModelGroup.objects.filter(name="demo").first() or catalog.model_group_create(
            actor=ACTOR,
            name="demo",
            display_name="Demo chat",
            description="The mock model, falling back to its smaller sibling.",
            members=[{"model": models[0]}, {"model": models[1]}],
        )
        embed_group = ModelGroup.objects.filter(name="demo-embed").first() or (
            catalog.model_group_create(
                actor=ACTOR,
                name="demo-embed",
                display_name="Demo embeddings",
                members=[{"model": models[2]}],
            )
        )
        media_group = ModelGroup.objects.filter(name="demo-media").first() or (
            catalog.model_group_create(
                actor=ACTOR,
                name="demo-media",
                display_name="Demo images, audio and moderations",
                description="Call its models by name: mock-image, mock-whisper, mock-tts, "
                "mock-moderation.",
                members=[{"model": m} for m in _media_models(upstream)],
            )
        )
        org, _ = organization_create(actor=ACTOR, name="Demo Org", external_id="demo")
        team = Team.objects.filter(organization=org, name="Demo Team").first() or team_create(
            actor=ACTOR,
            organization=org,
            name="Demo Team",
            model_groups=[group, embed_group, media_group],
            rpm_limit=600,
            budget_period=Team.BudgetPeriod.MONTHLY,
            budget_limit_micros=50_000_000,
        )
        if not team.model_groups.filter(pk=media_group.pk).exists():
            # A demo seeded before the media models: give its team the new group too.
            team = team_update(
                actor=ACTOR,
                team=team,
                data={},
                model_groups=[*team.model_groups.all(), media_group],
            )
        credits_grant(
            team=team,
            amount_micros=100_000_000,
            reason="Demo starting credits",
            actor=ACTOR,
            idempotency_key="demo-seed",
        )

        secret = getattr(settings, "DEMO_API_KEY", "") or _read_env("DEMO_API_KEY")
        key = VirtualKey.objects.filter(team=team, name="demo", status="active").first()
        if key is None or not secret or key.key_hash != hash_secret(secret):
            if key is not None:
                # The secret in .env was lost or edited: replace the key, keep its history.
                key_revoke(actor=ACTOR, key=key)
            key, secret = key_create(actor=ACTOR, team=team, name="demo")
            _set_env("DEMO_API_KEY", secret)
            self.stdout.write(f"minted demo key {key.public_id}; its secret is in .env")
        self.stdout.write(
            f"demo ready: {Organization.objects.get(pk=org.pk).public_id} / {team.public_id}"
        )


# The demo's image, transcription, speech and moderation models on the mock (costs in
# micro-USD; prices follow at the markup): per image (an HD 1024x1024 one dearer), per second
# of audio, per 1M characters, per 1M input tokens.
MEDIA_MODELS = (
    (
        "mock-image",
        Model.Mode.IMAGE,
        {
            "image_cost_micros": 40_000,
            "image_prices": {"1024x1024|hd": {"cost": 80_000, "price": 100_000}},
        },
    ),
    ("mock-whisper", Model.Mode.TRANSCRIPTION, {"audio_second_cost_micros": 100}),
    ("mock-tts", Model.Mode.SPEECH, {"character_cost_micros": 15_000_000}),
    ("mock-moderation", Model.Mode.MODERATION, {"input_cost_micros": 100_000}),
)


def _media_models(upstream) -> list:
    return [
        Model.objects.filter(name=name).first()
        or catalog.model_create(
            actor=ACTOR, name=name, upstream=upstream, upstream_model=name, mode=mode, **prices
        )
        for name, mode, prices in MEDIA_MODELS
    ]


def _read_env(name: str) -> str:
    if not ENV_FILE.exists():
        return ""
    match = re.search(rf"^{name}=(.*)$", ENV_FILE.read_text(), flags=re.M)
    return match.group(1).strip() if match else ""
