"""Run the shell commands of a Markdown document's fenced ``sh`` blocks, in order, as a reader would paste them.

The e2e tier runs docs/install.md this way on the test ground's real node, so that the document is what installs
voicefleet there. What a reader's machine has and the ground has not (a registry, the Prometheus Operator, provider
keys) is named in `Skip` rules: each must match at least once, so a skip that no longer applies fails loudly.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Skip:
    """Commands containing `marker` are not run (`block`: the whole block that contains it), because `why`."""

    marker: str
    why: str
    block: bool = False


@dataclass(frozen=True)
class Step:
    heading: str
    script: str  # what runs, after the skips
    skipped: tuple[str, ...]  # commands left out


def shell_blocks(markdown: str) -> list[tuple[str, str]]:
    """(the heading above it, its text) for every ```sh block."""
    blocks = []
    for match in FENCE.finditer(markdown):
        headings = re.findall(r"^#+ (.+)$", markdown[: match.start()], re.MULTILINE)
        blocks.append((headings[-1] if headings else "", match.group(1)))
    return blocks


def commands(block: str) -> list[str]:
    """The block's commands: lines joined across trailing backslashes; a `for`/`if` up to its `done`/`fi` is one."""
    joined: list[str] = []
    for line in block.splitlines():
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1] + "\n" + line
        else:
            joined.append(line)
    result: list[str] = []
    depth = 0
    for command in joined:
        words = command.split()
        if depth:
            result[-1] += "\n" + command
        elif command.strip():
            result.append(command)
        depth += sum(w in ("for", "while", "if") for w in words[:1]) - sum(w in ("done", "fi") for w in words[:1])
    return result


def plan(markdown: str, skips: Sequence[Skip], substitutions: Mapping[str, str] = {}) -> list[Step]:
    """The steps to run; raises if a skip matches nothing (the document changed under the test)."""
    used: set[Skip] = set()
    steps = []
    for heading, block in shell_blocks(markdown):
        for old, new in substitutions.items():
            block = block.replace(old, new)
        if whole := [s for s in skips if s.block and s.marker in block]:
            used.update(whole)
            steps.append(Step(heading, "", (block,)))
            continue
        kept, left_out = [], []
        for command in commands(block):
            inside = [s for s in skips if not s.block and s.marker in command]
            used.update(inside)
            if not inside:
                kept.append(command)
                continue
            # a skipped line inside a loop leaves the loop: drop only that line
            lines = [line for line in command.splitlines() if not any(s.marker in line for s in inside)]
            if len(lines) < len(command.splitlines()) and len(command.splitlines()) > 1:
                kept.append("\n".join(lines))
            left_out.append(command)
        steps.append(Step(heading, "\n".join(kept), tuple(left_out)))
    if unused := [s.marker for s in skips if s not in used]:
        raise AssertionError(f"skip rules that match no command of the document: {unused}")
    return steps


def run(step: Step, *, cwd: Path, env: Mapping[str, str], timeout: float = 600) -> str:
    """Run one step with bash -euo pipefail; raise with its output when a command fails."""
    if not step.script.strip():
        return ""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", step.script],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode:
        raise AssertionError(
            f"docs step under '{step.heading}' exited {result.returncode}:\n{step.script}\n"
            f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
        )
    return result.stdout
