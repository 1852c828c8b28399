"""``python -m symbiont``: developer commands.

``python -m symbiont new NAME [--dir DIR]`` writes ``NAME.py`` (an agent) and
``test_NAME.py`` (its pytest, with :class:`symbiont.testing.AgentHarness`) into DIR
(default: the current directory), and prints the manifest entry to add.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from pathlib import Path

__all__ = ["main"]

_AGENT = '''"""The {name} agent."""

from __future__ import annotations

from typing import Any

from symbiont import Agent, on


class {cls}(Agent):
    """Counts what arrives on ``{name}.in`` and publishes the count on ``{name}.out``."""

    @on("{name}.in")
    def handle(self, payload: Any) -> None:
        self.state["count"] = self.state.get("count", 0) + 1
        self.publish("{name}.out", {{"count": self.state["count"], "got": payload}})
'''

_TEST = '''"""Tests of the {name} agent, without a BEAM (symbiont.testing)."""

from __future__ import annotations

from symbiont.testing import AgentHarness

from {name} import {cls}


def test_it_counts_and_keeps_its_count_across_a_restart() -> None:
    agent = AgentHarness({cls})
    assert agent.event("{name}.in", "a") == [("{name}.out", {{"count": 1, "got": "a"}})]
    agent.restart()
    assert agent.event("{name}.in", "b") == [("{name}.out", {{"count": 2, "got": "b"}})]
'''


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def new(name: str, directory: Path) -> list[Path]:
    """Write the agent ``name`` and its test into ``directory``; returns the files."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise ValueError(
            f"NAME must be a Python module name in lower case (letters, digits, _), got {name!r}"
        )
    cls = _class_name(name)
    files = {directory / f"{name}.py": _AGENT, directory / f"test_{name}.py": _TEST}
    existing = [str(path) for path in files if path.exists()]
    if existing:
        raise FileExistsError(f"not overwriting {', '.join(existing)}")
    directory.mkdir(parents=True, exist_ok=True)
    for path, template in files.items():
        path.write_text(template.format(name=name, cls=cls))
    return list(files)


def main(argv: list[str] | None = None) -> int:
    """Run a developer command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m symbiont")
    commands = parser.add_subparsers(dest="command", required=True)
    scaffold = commands.add_parser("new", help="scaffold an agent and its test")
    scaffold.add_argument("name", help="the agent's module name, e.g. billing")
    scaffold.add_argument("--dir", default=".", type=Path, help="where to write the files")
    args = parser.parse_args(argv)
    try:
        files = new(args.name, args.dir)
    except (ValueError, FileExistsError) as exc:
        print(f"python -m symbiont new: {exc}", file=sys.stderr)
        return 2
    for path in files:
        print(f"wrote {path}")
    print("add to config :symbiont, agents: [...]:")
    print(f'  [name: "{args.name}", python: "{args.name}:{_class_name(args.name)}"]')
    print(f"and put {args.dir} on :python_path; test it with: pytest {files[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
