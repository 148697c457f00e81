"""Print pyproject.toml's requirements, one a line: the project's dependencies, then those of
each extra named on the command line.

    python requirements/pyproject_requirements.py [EXTRA ...] > service.txt
    pip install -c requirements/lock.txt -r service.txt

The Docker image installs its dependency layer this way, from pyproject.toml and the lock
alone, so editing the source does not rebuild it; `pip install -c requirements/lock.txt
-e '.[EXTRA]'` (the Makefile) installs the same versions.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirements(pyproject: Path, extras: Sequence[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = sorted(set(extras) - set(optional))
    if unknown:
        raise SystemExit(
            f"{pyproject}: no extra(s) {', '.join(unknown)}; it has {', '.join(sorted(optional))}"
        )
    listed = list(project["dependencies"])
    for extra in extras:
        listed += optional[extra]
    return listed


if __name__ == "__main__":
    print("\n".join(requirements(PYPROJECT, sys.argv[1:])))
