"""The outside tools the bench uses: nginx and wrk from Debian, LiteLLM in a venv of its own.

Each is installed once and reused. Whatever cannot be installed is reported, never fatal: the
bench falls back to its Python upstream and load generator, or marks LiteLLM unavailable.
"""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".bench"  # machine-local, gitignored
LITELLM_VERSION = "1.106.2"
LITELLM_VENV = CACHE / "litellm-venv"
# sbin is not on every PATH, and Debian puts nginx there.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


@dataclass
class Tools:
    nginx: str | None
    wrk: str | None
    note: str = ""


def _which(name: str) -> str | None:
    return shutil.which(name, path=SEARCH_PATH)


def _apt_install(packages: list[str]) -> str:
    """Install Debian packages; returns "" on success, else the reason."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    # A fresh machine has no package lists yet: on failure update them once and retry.
    for attempt in range(2):
        if attempt:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            return "apt-get install timed out"
        if done.returncode == 0:
            return ""
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"apt-get exited with {done.returncode}"


def ensure_debian_tools(*, allow_install: bool) -> Tools:
    """nginx and wrk, installed with apt-get when missing and we are root."""
    nginx, wrk = _which("nginx"), _which("wrk")
    if nginx and wrk:
        return Tools(nginx, wrk)
    missing = [p for p, found in (("nginx-light", nginx), ("wrk", wrk)) if not found]
    if not allow_install:
        return Tools(nginx, wrk, f"not installed ({', '.join(missing)}), --no-install given")
    if os.geteuid() != 0 or not _which("apt-get"):
        return Tools(nginx, wrk, f"missing {', '.join(missing)} and cannot apt-get (not root)")
    print(f"bench: installing {' '.join(missing)} with apt-get ...", file=sys.stderr)
    reason = _apt_install(missing)
    nginx, wrk = _which("nginx"), _which("wrk")
    return Tools(nginx, wrk, f"apt-get failed: {reason}" if reason else "")


@dataclass
class LiteLLMInstall:
    bin: Path | None
    reason: str = ""  # why it is unavailable


def ensure_litellm(*, allow_install: bool) -> LiteLLMInstall:
    """litellm[proxy] pinned, in .bench/litellm-venv so it never mixes with our dependencies."""
    stamp = LITELLM_VENV / f".installed-{LITELLM_VERSION}"
    binary = LITELLM_VENV / "bin" / "litellm"
    if stamp.exists() and binary.exists():
        return LiteLLMInstall(binary)
    if not allow_install:
        return LiteLLMInstall(None, "not installed and --no-install given")
    CACHE.mkdir(exist_ok=True)
    log = CACHE / "litellm-install.log"
    print(
        f"bench: installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} "
        f"(once; log in {log}) ...",
        file=sys.stderr,
    )
    python = LITELLM_VENV / "bin" / "python"
    steps = [
        [sys.executable, "-m", "venv", str(LITELLM_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(python), "-m", "pip", "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"],
    ]
    with log.open("w") as out:
        for cmd in steps:
            try:
                done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=1200)
            except subprocess.TimeoutExpired:
                return LiteLLMInstall(None, f"timed out: {' '.join(cmd)}")
            if done.returncode != 0:
                tail = log.read_text().strip().splitlines()[-3:]
                return LiteLLMInstall(None, f"{' '.join(cmd[-2:])} failed: {' | '.join(tail)}")
    if not binary.exists():
        return LiteLLMInstall(None, f"installed, but {binary} is missing")
    stamp.touch()
    return LiteLLMInstall(binary)


if __name__ == "__main__":
    # `python -m bench.install` pre-installs everything, e.g. while preparing a machine.
    print(ensure_debian_tools(allow_install=True))
    print(ensure_litellm(allow_install=True))
