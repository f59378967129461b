"""Production settings (DEBUG=false) refuse to start unsafe, each refusal naming its setting.

Each case imports the settings in a fresh interpreter with exactly the environment given (no
.env file: ENV_FILE=/dev/null), as a container would start.
"""

import os
import secrets
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.conf import settings


def production_env(**overrides: str) -> dict[str, str]:
    """A complete, safe production environment, with overrides (None removes a variable)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "ENV_FILE": os.devnull,
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "MASTER_KEY": "tgm-" + secrets.token_urlsafe(32),
        "SECRETS_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "METRICS_TOKEN": secrets.token_urlsafe(24),
        "ALLOWED_HOSTS": "tollgate.example.com",
        "HTTPS": "true",
        "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x"),
    }
    env.update(overrides)
    return {name: value for name, value in env.items() if value is not None}


def run_python(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, *argv],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def import_settings(env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_python(env, "-c", "import saas.settings")


def assert_refused(result: subprocess.CompletedProcess, setting: str) -> None:
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    refusal = result.stderr.split("Refusing to start with DEBUG=false:", 1)[1]
    assert f"- {setting} " in refusal


def test_a_complete_production_environment_starts():
    result = import_settings(production_env())

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("value", [None, "", "change-me"])
def test_production_refuses_a_missing_or_placeholder_secret_key(value):
    assert_refused(import_settings(production_env(SECRET_KEY=value)), "SECRET_KEY")


@pytest.mark.parametrize("value", [None, "", "tgm-change-me"])
def test_production_refuses_a_missing_or_placeholder_master_key(value):
    assert_refused(import_settings(production_env(MASTER_KEY=value)), "MASTER_KEY")


def test_production_refuses_a_master_key_shorter_than_32_characters():
    result = import_settings(production_env(MASTER_KEY="tgm-" + "x" * 27))

    assert_refused(result, "MASTER_KEY")
    assert "shorter than 32 characters" in result.stderr


@pytest.mark.parametrize("value", [None, "", "change-me", "not-a-fernet-key"])
def test_production_refuses_missing_placeholder_or_invalid_encryption_keys(value):
    result = import_settings(production_env(SECRETS_ENCRYPTION_KEYS=value))

    assert_refused(result, "SECRETS_ENCRYPTION_KEYS")


def test_production_refuses_an_open_metrics_endpoint():
    assert_refused(import_settings(production_env(METRICS_TOKEN=None)), "METRICS_TOKEN")


def test_production_refuses_allowed_hosts_star():
    result = import_settings(production_env(ALLOWED_HOSTS="tollgate.example.com,*"))

    assert_refused(result, "ALLOWED_HOSTS")


def test_production_refuses_insecure_cookies_behind_https():
    result = import_settings(production_env(HTTPS="true", SECURE_COOKIES="false"))

    assert_refused(result, "SECURE_COOKIES")


def test_production_over_plain_http_keeps_plain_cookies():
    result = run_python(
        production_env(HTTPS="false"),
        "-c",
        "from saas import settings as s; print(s.SESSION_COOKIE_SECURE, s.SECURE_HSTS_SECONDS)",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "0"]


def test_every_refusal_is_listed_at_once():
    result = import_settings(production_env(SECRET_KEY=None, METRICS_TOKEN=None))

    assert_refused(result, "SECRET_KEY")
    assert_refused(result, "METRICS_TOKEN")


def test_development_settings_accept_the_env_example_placeholders():
    env = production_env(
        DEBUG="true", SECRET_KEY="change-me", MASTER_KEY="tgm-change-me", METRICS_TOKEN=None
    )

    assert import_settings(env).returncode == 0


def test_check_deploy_passes_with_production_settings():
    result = run_python(production_env(), "manage.py", "check", "--deploy", "--fail-level", "INFO")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
