"""The Dockerfile as a list of stages and their instructions (enough for the tests; no
Docker engine in CI)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def dockerfile_stages(text: str) -> list[Stage]:
    """The Dockerfile's stages, each with its (KEYWORD, arguments) instructions."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[Stage] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            assert match, f"unexpected FROM line: {line}"
            stages.append(Stage(match[2] or f"stage-{len(stages)}", match[1]))
        elif stages:
            stages[-1].instructions.append((keyword, " ".join(args.split())))
    return stages


def inherited(stages: list[Stage], name: str, keyword: str) -> list[str]:
    """`keyword`'s arguments along the chain of stages that `name` builds on, oldest first."""
    by_name = {stage.name: stage for stage in stages}
    chain = []
    stage: Stage | None = by_name[name]
    while stage is not None:
        chain.append(stage)
        stage = by_name.get(stage.base)
    return [args for stage in reversed(chain) for args in stage.all(keyword)]


def healthcheck_command(stages: list[Stage], target: str) -> list[str]:
    """The exec-form command of the HEALTHCHECK that `target` inherits."""
    (healthcheck,) = inherited(stages, target, "HEALTHCHECK")
    _, _, command = healthcheck.partition(" CMD ")
    argv: list[str] = json.loads(command)
    return argv
