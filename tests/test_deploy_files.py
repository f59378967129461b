"""The deployment files agree with the code: the image's build context leaves secrets out,
docker-compose.yml and the Kubernetes manifests give every service what the production
settings require and only names the settings read, and every command they run exists.

No Docker here (no engine runs on the machines this is tested on), so the files are read:
.dockerignore with Docker's documented matching rules, the YAML with PyYAML, the settings'
environment reads from saas/settings.py's source, probe paths with Django's URL resolver."""

import ast
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands
from django.urls import Resolver404, resolve

ROOT = Path(__file__).resolve().parent.parent
K8S_BASE = ROOT / "deploy" / "k8s" / "base"
# scripts/ is not a package: load the compose stack's secret writer from its file.
_spec = importlib.util.spec_from_file_location("bootstrap_env", ROOT / "scripts/bootstrap_env.py")
bootstrap_env = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bootstrap_env)

# Read by the processes themselves, not by saas/settings.py: the entry scripts, uvicorn.
NOT_SETTINGS = {
    "PORT",  # scripts/healthcheck.py, scripts/docker-first-start.sh
    "PUBLIC_PORT",  # scripts/docker-first-start.sh: the panel's address as printed
    "DEMO",  # scripts/docker-first-start.sh
    "ADMIN_PASSWORD",  # manage.py panel_admin
    "LITELLM_SALT_KEY",  # the LiteLLM proxy's own (scripts/bootstrap_env.py writes it)
    "WEB_CONCURRENCY",  # uvicorn --workers
    "FORWARDED_ALLOW_IPS",  # uvicorn --proxy-headers
}
# With DEBUG off the settings refuse to start without these (or disable what they guard):
# every production service must be given them, whatever defaults the settings' code spells.
PRODUCTION_SECRETS = {"SECRET_KEY", "MASTER_KEY", "SECRETS_ENCRYPTION_KEYS", "METRICS_TOKEN"}


# .dockerignore ---------------------------------------------------------------------------


def dockerignore_rules(text: str) -> list[tuple[re.Pattern, bool]]:
    """(regex, is_exception) per line, as Docker reads .dockerignore: comments and blank lines
    skipped, `!` for exceptions, each pattern cleaned (filepath.Clean) and anchored at the
    context's root; `*` and `?` stop at `/`, `**` spans any number of directories."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line[1:].strip() if exception else line).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            ch = pattern[i]
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    i += 1
                regex += ".*" if i >= len(pattern) else "(.*/)?"
                continue
            if ch == "*":
                regex += "[^/]*"
            elif ch == "?":
                regex += "[^/]"
            elif ch == "[":
                end = pattern.index("]", i)
                regex += pattern[i : end + 1]
                i = end
            elif ch == "\\":
                i += 1
                regex += re.escape(pattern[i])
            else:
                regex += re.escape(ch)
            i += 1
        rules.append((re.compile(f"^{regex}$"), exception))
    return rules


def dockerignored(path: str, rules) -> bool:
    """Docker's MatchesOrParentMatches: a rule applies when it matches the path or one of its
    parent directories; the last rule that applies decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for regex, exception in rules:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not exception
    return ignored


def build_context(tree: Path, rules) -> set[str]:
    files = {str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()}
    return {f for f in files if not dockerignored(f, rules)}


# A checkout where `make` ran: what the image needs, and what must never be sent to a builder.
APP_FILES = {
    ".env.example",
    "saas/settings.py",
    "saas/asgi.py",
    "manage.py",
    "pyproject.toml",
    "requirements/runtime.lock",
    "scripts/healthcheck.py",
    "scripts/docker-first-start.sh",
    "templates/panel/base.html",
    "panel/static/panel/vendor/htmx.min.js",
    "bench/__main__.py",
}
LOCAL_FILES = {
    ".env",
    ".env.local",
    ".env.production",
    "saas/.env",
    ".venv/bin/python",
    ".venv/lib/python3.11/site-packages/django/__init__.py",
    ".git/config",
    ".git/objects/ab/cdef",
    ".pytest_cache/v/cache/nodeids",
    ".ruff_cache/0.8/x",
    "saas/__pycache__/settings.cpython-311.pyc",
    "tests/artifacts/screenshots/dashboard.png",
    "tests/test_smoke.py",
    "bench/results/latest.json",
    ".bench/litellm-venv/bin/litellm",
    "tollgate.egg-info/PKG-INFO",
}


def test_the_build_context_of_a_checkout_with_a_env_has_no_secrets_venv_or_git(tmp_path):
    # given
    for name in APP_FILES | LOCAL_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    rules = dockerignore_rules((ROOT / ".dockerignore").read_text())
    # when
    context = build_context(tmp_path, rules)
    # then no secret, environment, history, cache or test output is sent, and the app is
    assert context == APP_FILES


def test_the_dockerignore_reading_follows_dockers_rules():
    # Docker's documented examples: anchored at the root, ** for any depth, last rule wins.
    rules = dockerignore_rules("*/temp*\n*/*/temp*\ntemp?\n**/*.go\n*.md\n!README*.md\n")
    assert dockerignored("somedir/temporary.txt", rules)
    assert dockerignored("somedir/subdir/temporary.txt", rules)
    assert dockerignored("tempa/file", rules)  # a matched directory takes its contents
    assert not dockerignored("temporary.txt", rules)
    assert dockerignored("a/b/c.go", rules) and dockerignored("c.go", rules)
    assert dockerignored("CHANGES.md", rules) and not dockerignored("README-x.md", rules)
    assert not dockerignored("docs/CHANGES.md", rules)  # *.md is anchored at the root


def test_every_file_the_image_runs_is_in_the_build_context():
    rules = dockerignore_rules((ROOT / ".dockerignore").read_text())
    context = set()
    for folder, dirs, files in os.walk(ROOT):
        here = Path(folder).relative_to(ROOT)
        # pruned like Docker's walk (no exception rule re-includes anything below these)
        dirs[:] = [d for d in dirs if not dockerignored(str(here / d), rules)]
        context |= {str(here / f) for f in files if not dockerignored(str(here / f), rules)}
    context = {f.removeprefix("./") for f in context}
    for needed in ("manage.py", "requirements/runtime.lock", "saas/asgi.py", ".env.example"):
        assert needed in context
    for needed in dockerfile_copies() | script_files():
        assert needed in context, f"{needed} is excluded by .dockerignore"


# The settings' environment -----------------------------------------------------------------


@cache
def settings_env_reads() -> dict[str, bool]:
    """Every environment name saas/settings.py reads -> whether production requires it (read
    with no default, or with NOTSET as the default when DEBUG is off)."""
    tree = ast.parse((ROOT / "saas" / "settings.py").read_text())
    reads = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        is_env = (isinstance(func, ast.Name) and func.id == "env") or (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "env"
        )
        if not is_env or not node.args or not isinstance(node.args[0], ast.Constant):
            continue
        default = next((kw.value for kw in node.keywords if kw.arg == "default"), None)
        required = default is None or "NOTSET" in ast.unparse(default)
        reads[node.args[0].value] = reads.get(node.args[0].value, False) or required
    return reads


def test_the_settings_env_reads_are_found():
    reads = settings_env_reads()
    assert PRODUCTION_SECRETS | {"LITELLM_BASE_URL", "LITELLM_MASTER_KEY"} <= set(reads)
    assert reads["DATABASE_URL"] is False  # it has a default


def settings_start(environment: dict[str, str]) -> subprocess.CompletedProcess:
    """Load the settings and set Django up in a fresh interpreter that sees only this
    environment: no .env is read (the image has none of its own), so a refusal to start
    (ImproperlyConfigured) shows as a failed exit."""
    code = (
        "import environ; environ.Env.read_env = classmethod(lambda *a, **k: None)\n"
        "import django; django.setup()\n"
        "from django.conf import settings; assert not settings.DEBUG\n"
    )
    env = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "saas.settings"} | environment
    return subprocess.run(  # noqa: S603 - our own interpreter and a fixed program
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )


def generated_production_secrets(tmp_path: Path) -> dict[str, str]:
    """What the compose stack's `init` service writes for the app services to read."""
    env_file = tmp_path / "tollgate.env"
    bootstrap_env.ensure(env_file, bootstrap_env.PRODUCTION, from_environment=False)
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines()[1:])


# Commands ------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        tuple(line.split(None, 1))
        for line in lines
        if line and not line.startswith("#") and len(line.split(None, 1)) == 2
    ]


def dockerfile_copies() -> set[str]:
    return {
        args.split()[0]
        for op, args in dockerfile_instructions()
        if op == "COPY" and not args.startswith("--from") and args.split()[0] != "."
    }


def script_files() -> set[str]:
    return {str(p.relative_to(ROOT)) for p in (ROOT / "scripts").iterdir() if p.is_file()}


def assert_command_exists(argv: list[str], where: str) -> None:
    """The command is one the image can run: a console script of the locked environment with
    an entry point that exists, a manage.py command that exists, or a script in the image
    whose own commands pass this check."""
    if argv[:2] == ["/bin/sh", "-c"] or argv[:1] == ["CMD-SHELL"]:
        argv = shlex.split(argv[-1] if argv[0] == "CMD-SHELL" else argv[2])
    exe, *args = argv
    if exe.startswith("scripts/"):
        script = ROOT / exe
        assert script.is_file() and os.access(script, os.X_OK), f"{where}: {exe} not executable"
        if script.suffix == ".sh":
            for line in script.read_text().splitlines():
                line = line.strip()
                if line.startswith(("python ", "celery ", "uvicorn ")):
                    assert_command_exists(shlex.split(line), f"{where} ({exe})")
        return
    assert (Path(sys.executable).parent / exe).exists(), f"{where}: no {exe} in the venv"
    if exe == "python":
        target = args[0]
        assert (ROOT / target).is_file(), f"{where}: no {target}"
        if target == "manage.py":
            assert args[1] in get_commands(), f"{where}: no manage.py command {args[1]}"
    elif exe == "celery":
        assert args[:2] == ["-A", "saas"], f"{where}: celery must load the saas app"
        from celery import Celery
        from celery.app.utils import find_app

        assert isinstance(find_app("saas"), Celery)  # what `celery -A saas` loads
        assert args[2] in {"worker", "beat", "inspect"}, f"{where}: celery {args[2]}?"
    elif exe == "uvicorn":
        module, _, attribute = args[0].partition(":")
        assert (module, attribute) == ("saas.asgi", "application"), where
        assert {"--loop", "uvloop"} <= set(args), where
        # httptools with header and body read deadlines (saas/server.py), as make run serves
        protocol = args[args.index("--http") + 1]
        assert protocol == "saas.server:HttpToolsProtocolWithDeadlines", where
        from uvicorn.importer import import_from_string

        assert import_from_string(protocol), where
    else:
        pytest.fail(f"{where}: unknown command {argv}")


def test_the_dockerfile_runs_a_locked_non_root_image_with_a_health_check():
    instructions = dockerfile_instructions()
    froms = [args for op, args in instructions if op == "FROM"]
    assert len(froms) >= 2, "multi-stage: a builder and a runtime"
    base = next(args.split("=", 1)[1] for op, args in instructions if op == "ARG")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base)
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert "--require-hashes" in runs and "runtime.lock" in runs
    assert [args for op, args in instructions if op == "USER"][-1] == "tollgate"
    health = next(args for op, args in instructions if op == "HEALTHCHECK")
    assert_command_exists(json.loads(health.split("CMD", 1)[1]), "HEALTHCHECK")
    cmd = next(args for op, args in instructions if op == "CMD")
    assert_command_exists(json.loads(cmd), "CMD")


# docker-compose.yml --------------------------------------------------------------------------


def interpolate(value: str) -> str:
    """Compose's ${NAME:-default} with nothing set in the shell: the default."""
    return re.sub(r"\$\{([A-Z_]+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", str(value))


@cache
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def app_services() -> dict[str, dict]:
    return {n: s for n, s in compose()["services"].items() if s.get("image") == "tollgate:local"}


def mounts_secrets(service: dict) -> bool:
    return any(str(v).startswith("secrets:/var/lib/tollgate") for v in service.get("volumes", []))


def test_every_compose_app_service_gets_what_production_settings_require(tmp_path):
    secrets = generated_production_secrets(tmp_path)
    required = {name for name, needed in settings_env_reads().items() if needed}
    required |= PRODUCTION_SECRETS
    started = {}
    for name, service in app_services().items():
        if name == "init":
            continue  # writes the secrets; needs none
        environment = {k: interpolate(v) for k, v in service["environment"].items()}
        assert mounts_secrets(service), f"{name} does not read the generated secrets"
        provided = environment | secrets
        assert required <= set(provided), f"{name} lacks {required - set(provided)}"
        assert environment["DEBUG"] == "false"
        assert {"LITELLM_BASE_URL", "LITELLM_MASTER_KEY"} <= set(provided)
        unknown = set(environment) - set(settings_env_reads()) - NOT_SETTINGS
        assert not unknown, f"{name} sets names nothing reads: {unknown}"
        key = json.dumps(provided, sort_keys=True)
        if key not in started:
            started[key] = settings_start(provided | {"DATABASE_URL": environment["DATABASE_URL"]})
        assert started[key].returncode == 0, f"{name}: {started[key].stderr[-2000:]}"


def test_the_compose_stack_starts_in_order_with_health_checks_and_pinned_images():
    services = compose()["services"]
    for name, service in services.items():
        image = service.get("image", "")
        if image != "tollgate:local":
            # an exact release (PostgreSQL's are major.minor), never latest, stable, main-...
            assert re.search(r":v?\d+\.\d+(\.\d+)?(-[a-z]+)?(@sha256:\w+)?$", image), (
                f"{name}: {image} is not pinned"
            )
        one_shot = service.get("restart") == "no"
        if one_shot:
            waiting = [s for s in services.values() if name in s.get("depends_on", {})]
            assert waiting, f"{name} runs once, and nothing waits for it"
            assert all(
                s["depends_on"][name]["condition"] == "service_completed_successfully"
                for s in waiting
            )
        else:
            assert service["healthcheck"]["test"], f"{name} has no health check"
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert_redis_persists_every_reply(services["redis"]["command"])


def assert_redis_persists_every_reply(command: list[str]) -> None:
    """An append-only file fsynced before each reply: an acknowledged SETTLE is on disk."""
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_the_kubernetes_redis_keeps_every_acknowledged_write_on_disk():
    redis = k8s_objects()[("StatefulSet", "redis")]
    container = redis["spec"]["template"]["spec"]["containers"][0]
    assert_redis_persists_every_reply(container["command"])
    assert redis["spec"]["volumeClaimTemplates"], "its data must outlive the pod"


def test_every_compose_command_and_health_check_exists_in_the_image():
    for name, service in app_services().items():
        assert_command_exists(service["command"], name)
        test = service.get("healthcheck", {}).get("test")
        if test:
            assert_command_exists(test[1:] if test[0] == "CMD" else test, f"{name} health")


def test_the_litellm_profile_runs_a_pinned_litellm_with_its_own_database_wired_to_tollgate():
    services = compose()["services"]
    litellm = services["litellm"]
    assert litellm["profiles"] == ["litellm"]
    assert litellm["image"].startswith("ghcr.io/berriai/litellm:v1.106.2")
    images = [s.get("image", "") for s in services.values()]
    assert not [i for i in images if re.search(r"1\.82\.[78]\b", i)]  # compromised releases
    assert "@litellm-db:5432/" in litellm["environment"]["DATABASE_URL"]
    assert services["litellm-db"]["profiles"] == ["litellm"]
    assert litellm["depends_on"]["litellm-db"]["condition"] == "service_healthy"
    # its master and salt keys come from the file init writes, the master key shared with
    # Tollgate's sync
    assert mounts_secrets(litellm) and "litellm.env" in " ".join(litellm["entrypoint"])
    assert set(bootstrap_env.LITELLM_SALT) == {"LITELLM_SALT_KEY"}
    assert "LITELLM_MASTER_KEY" in bootstrap_env.PRODUCTION
    for name, service in app_services().items():
        assert "LITELLM_BASE_URL" in service["environment"], name


def test_init_writes_the_secrets_once_and_takes_those_the_operator_set(tmp_path, monkeypatch):
    # given an operator's own master key
    monkeypatch.setenv("MASTER_KEY", "tgm-" + "o" * 40)
    env_file = tmp_path / "tollgate.env"
    # when init runs twice
    first = bootstrap_env.ensure(env_file, bootstrap_env.PRODUCTION, from_environment=True)
    second = bootstrap_env.ensure(env_file, bootstrap_env.PRODUCTION, from_environment=True)
    # then the operator's value is kept, the rest generated once
    assert first == second and first["MASTER_KEY"] == "tgm-" + "o" * 40
    assert set(first) == set(bootstrap_env.PRODUCTION)
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"


# Kubernetes ----------------------------------------------------------------------------------


@cache
def k8s_objects() -> dict[tuple[str, str], dict]:
    kustomization = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    objects = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S_BASE / resource).read_text()):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def workloads() -> dict[str, dict]:
    return {
        name: obj for (kind, name), obj in k8s_objects().items() if kind in {"Deployment", "Job"}
    }


def container_env(container: dict) -> dict[str, str]:
    """Every name the container gets -> where from (a value, a Secret, a ConfigMap key)."""
    names = {}
    for source in container.get("envFrom", []):
        config = source.get("configMapRef")
        assert config, "secrets are named one by one (secretKeyRef), never envFrom"
        data = k8s_objects()[("ConfigMap", config["name"])]["data"]
        names |= {k: f"configmap {config['name']}" for k in data}
    for entry in container.get("env", []):
        names[entry["name"]] = "secret" if "secretKeyRef" in entry.get("valueFrom", {}) else "value"
    return names


def test_every_kubernetes_env_name_is_one_the_settings_read_and_required_ones_are_given():
    reads = settings_env_reads()
    required = {name for name, needed in reads.items() if needed} | PRODUCTION_SECRETS
    for name, obj in workloads().items():
        for container in pod_spec(obj)["containers"]:
            names = container_env(container)
            unknown = set(names) - set(reads) - NOT_SETTINGS
            assert not unknown, f"{name}: {unknown} are read by nothing"
            assert required <= set(names), f"{name} lacks {required - set(names)}"
            for secret in ("SECRET_KEY", "MASTER_KEY", "SECRETS_ENCRYPTION_KEYS"):
                assert names[secret] == "secret", f"{name}: {secret} must come from a Secret"
    config = k8s_objects()[("ConfigMap", "tollgate-config")]["data"]
    assert config["DEBUG"] == "false"
    assert set(config) <= set(reads) | NOT_SETTINGS


def test_no_secret_value_is_committed_in_the_kubernetes_manifests():
    assert not [key for key in k8s_objects() if key[0] == "Secret"]
    for path in K8S_BASE.glob("*.yaml"):
        assert not re.search(r"tgm-|sk-[A-Za-z0-9]{8}", path.read_text()), path


def test_every_kubernetes_probe_path_resolves_to_the_health_views():
    from ops import health

    config = k8s_objects()[("ConfigMap", "tollgate-config")]["data"]
    allowed_hosts = config["ALLOWED_HOSTS"].split(",")
    probes = {}
    for name, obj in workloads().items():
        for container in pod_spec(obj)["containers"]:
            for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                if http := container.get(kind, {}).get("httpGet"):
                    try:
                        probes[(name, kind)] = resolve(http["path"]).func
                    except Resolver404:
                        pytest.fail(f"{name} {kind}: {http['path']} is not a URL")
                    assert http["port"] in {p.get("name") for p in container["ports"]} | {8000}
                    # Kubernetes sends the pod's IP as Host, which ALLOWED_HOSTS refuses (400)
                    headers = {h["name"]: h["value"] for h in http.get("httpHeaders", [])}
                    assert headers.get("Host") in allowed_hosts, f"{name} {kind}: Host header"
    assert probes[("gateway", "readinessProbe")] is health.ready
    assert probes[("gateway", "livenessProbe")] is health.live


def test_the_kubernetes_workloads_run_commands_that_exist_with_resources():
    for name, obj in workloads().items():
        for container in pod_spec(obj)["containers"]:
            assert_command_exists(container["command"] + container.get("args", []), name)
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert "memory" in resources["limits"], name
            assert container["securityContext"]["runAsNonRoot"] is True, name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
    assert workloads()["migrate"]["kind"] == "Job"
    assert pod_spec(workloads()["migrate"])["containers"][0]["args"][:2] == ["manage.py", "migrate"]


def test_one_beat_a_scaled_gateway_and_a_disruption_budget():
    objects = k8s_objects()
    beat = objects[("Deployment", "beat")]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    hpa = objects[("HorizontalPodAutoscaler", "gateway")]["spec"]
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert hpa["scaleTargetRef"] == target
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert hpa["minReplicas"] >= 2
    gateway_labels = objects[("Deployment", "gateway")]["spec"]["template"]["metadata"]["labels"]
    pdb = objects[("PodDisruptionBudget", "gateway")]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= gateway_labels.items()
    service = objects[("Service", "gateway")]["spec"]
    assert service["selector"].items() <= gateway_labels.items()
