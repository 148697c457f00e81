"""requirements/lock.txt agrees with pyproject.toml: every requirement of the project and of
each extra is pinned there, at a version its specifier allows. When this fails, run
`make lock`."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.compose import ROOT

LOCK = ROOT / "requirements" / "lock.txt"
# What the Dockerfile's dependency layers install: the script's output, under the lock.
LISTING_SCRIPT = ROOT / "requirements" / "pyproject_requirements.py"


def pinned_versions(text: str) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier  # one `==` pin per line
        assert specifier.operator == "==", line
        pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    return pins


def project_requirements() -> list[tuple[str, Requirement]]:
    """(where it is declared, requirement) for the dependencies and every extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [("dependencies", text) for text in project["dependencies"]]
    for extra, texts in project.get("optional-dependencies", {}).items():
        declared += [(f"optional-dependencies.{extra}", text) for text in texts]
    return [(where, Requirement(text)) for where, text in declared]


def lock_disagreements(pins: dict[str, Version]) -> list[str]:
    problems = []
    for where, requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{where}: {requirement} is not in the lock")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{where}: {requirement} but the lock pins {name}=={pins[name]}")
    return problems


def test_every_project_requirement_is_pinned_in_the_lock() -> None:
    text = LOCK.read_text()
    assert "make lock" in text.splitlines()[1], "the lock's header names its command"
    assert lock_disagreements(pinned_versions(text)) == [], "run `make lock`"


def test_a_requirement_missing_from_the_lock_is_reported() -> None:
    pins = pinned_versions(LOCK.read_text())
    pins.pop("alembic")
    (problem,) = lock_disagreements(pins)
    assert problem.startswith("dependencies: alembic") and problem.endswith("is not in the lock")
    pins["alembic"] = Version("0.1")
    (problem,) = lock_disagreements(pins)
    assert problem.endswith("but the lock pins alembic==0.1")


def listed_requirements(*extras: str) -> subprocess.CompletedProcess[str]:
    """The script run as the Dockerfile runs it (its output becomes `pip install -r`)."""
    command = [sys.executable, str(LISTING_SCRIPT), *extras]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_the_image_lists_exactly_the_project_requirements() -> None:
    declared: dict[str, list[str]] = {}
    for where, requirement in project_requirements():
        declared.setdefault(where, []).append(str(requirement))
    service = listed_requirements()
    assert service.returncode == 0, service.stderr
    listed = [str(Requirement(line)) for line in service.stdout.splitlines()]
    assert listed == declared["dependencies"]
    gpu = listed_requirements("gpu")
    assert gpu.returncode == 0, gpu.stderr
    listed_gpu = [str(Requirement(line)) for line in gpu.stdout.splitlines()]
    assert listed_gpu == declared["dependencies"] + declared["optional-dependencies.gpu"]


def test_the_image_refuses_an_unknown_extra() -> None:
    done = listed_requirements("cuda")
    assert done.returncode != 0 and done.stdout == ""
    assert "no extra(s) cuda" in done.stderr and "gpu" in done.stderr
