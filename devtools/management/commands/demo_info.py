"""Prints what to do next after `make run` started the product."""

from django.conf import settings
from django.core.management.base import BaseCommand

from devtools.management.commands.seed_demo import _read_env, default_port


class Command(BaseCommand):
    help = "Show the addresses, the admin key and a curl line for the demo."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=default_port())

    def handle(self, *args, port, **options):
        base = f"http://127.0.0.1:{port}"
        demo_key = _read_env("DEMO_API_KEY")
        self.stdout.write(f"""
Tollgate is running (Ctrl-C stops the server, the worker and beat).

  Admin API      {base}/api/          header  X-Admin-Key: {settings.MASTER_KEY}
  API docs       {base}/api/docs/
  Gateway        {base}/v1/           demo key {demo_key}

Try the gateway with the demo key (the upstream is the built-in mock):

  curl -s {base}/v1/chat/completions \\
    -H 'Authorization: Bearer {demo_key}' -H 'Content-Type: application/json' \\
    -d '{{"model": "demo", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

Images, audio and moderations (models of the demo-media group):

  curl -s {base}/v1/images/generations -H 'Authorization: Bearer {demo_key}' \
    -H 'Content-Type: application/json' -d '{{"model": "mock-image", "prompt": "a lighthouse"}}'
  curl -s {base}/v1/audio/speech -H 'Authorization: Bearer {demo_key}' \
    -H 'Content-Type: application/json' -o speech.wav \
    -d '{{"model": "mock-tts", "voice": "alloy", "input": "Hello!", "response_format": "wav"}}'
  curl -s {base}/v1/audio/transcriptions -H 'Authorization: Bearer {demo_key}' \
    -F model=mock-whisper -F file=@speech.wav
  curl -s {base}/v1/moderations -H 'Authorization: Bearer {demo_key}' \
    -H 'Content-Type: application/json' -d '{{"model": "mock-moderation", "input": "hi"}}'

And the admin API with the master key:

  curl -s {base}/api/teams/ -H 'X-Admin-Key: {settings.MASTER_KEY}'
""")
