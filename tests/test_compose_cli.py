"""docker-compose.yaml through a real Compose parser: Debian's docker-compose 1.29 or Compose v2, when installed.

The structural checks are in test_compose.py (they need no binary); this one asks the tool users will run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"


def _compose_cli() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.mark.integration
@pytest.mark.skipif(_compose_cli() is None, reason="neither docker-compose nor Compose v2 is installed")
def test_docker_compose_accepts_the_file(tmp_path):
    cli = _compose_cli()
    ok = subprocess.run(
        [*cli, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    # without an .env the required secrets are refused with a message naming the variable
    empty = tmp_path / "empty.env"
    empty.write_text("", encoding="utf-8")
    refused = subprocess.run(
        [*cli, "--env-file", str(empty), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert refused.returncode != 0 and "in .env" in refused.stderr
