"""The ``symbiont`` command (also ``python -m symbiont``).

``symbiont new NAME [--dir DIR]`` creates the directory ``DIR/NAME`` (``DIR`` is the
current directory by default) with a small agent project: ``NAME.py`` (an agent with one
``@on`` handler), ``test_NAME.py`` (its test, with the ``agent_harness`` fixture of
:mod:`symbiont.pytest_plugin`), ``config.exs`` (what runs it under a Symbiont node) and a
``README.md`` that says how. It refuses a ``NAME`` that is not a module name, and a
directory that exists. ``symbiont --version`` prints the version.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from pathlib import Path

from . import __version__

__all__ = ["main", "new"]

_AGENT = '''"""The {name} agent."""

from __future__ import annotations

from typing import Any

from symbiont import Agent, on


class {cls}(Agent):
    """Counts what arrives on ``{name}.in`` and publishes the count on ``{name}.out``."""

    @on("{name}.in")
    def handle(self, payload: Any) -> None:
        # self.state is checkpointed after each event: after a crash, the agent starts
        # again from the state of the last event it handled. (A handler may also be an
        # async def, awaiting self.apublish(...) and self.acall(...).)
        self.state["count"] = self.state.get("count", 0) + 1
        self.publish("{name}.out", {{"count": self.state["count"], "got": payload}})
'''

_TEST = '''"""Tests of the {name} agent, without a BEAM: the agent_harness fixture comes with
symbiont (its pytest plugin)."""

from __future__ import annotations

from {name} import {cls}


def test_it_counts_and_keeps_its_count_across_a_restart(agent_harness) -> None:
    agent = agent_harness({cls})
    assert agent.event("{name}.in", "a") == [("{name}.out", {{"count": 1, "got": "a"}})]
    agent.restart()  # back from its last checkpoint, as after a crash
    assert agent.event("{name}.in", "b") == [("{name}.out", {{"count": 2, "got": "b"}})]
'''

_CONFIG = """import Config

# The {name} agent under a Symbiont node: from a Symbiont checkout,
#   SYMBIONT_CONFIG={config} make run
# (this file is applied on top of the node's config/config.exs).
config :symbiont,
  python_path: [Path.expand(".", __DIR__)],
  agents: [
    [name: "{name}", python: "{name}:{cls}"]
  ]
"""

_README = """# {name}

A Symbiont agent: `{name}.py` counts what arrives on `{name}.in` and publishes the count on
`{name}.out`.

## Test it

```sh
pip install symbiont   # or pip install -e PATH from a Symbiont checkout; [wasm] adds Wasm
pytest
```

## Run it under a node

`config.exs` declares it (the directory on the node's `python_path`, the agent in its
`agents`). From a checkout of Symbiont:

```sh
SYMBIONT_CONFIG={config} make run
```

then, in a second terminal, `make shell`:

```elixir
Symbiont.publish("{name}.in", "hello")
Symbiont.peek("{name}.out", ms: 5_000)
```

To add it to a node's own configuration instead, put this in its `config :symbiont`:

```elixir
python_path: ["{directory}"],
agents: [[name: "{name}", python: "{name}:{cls}"]]
```
"""

_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ValueError(
            f"NAME must be a Python module name in lower case (a letter, then letters, "
            f"digits or _), not a keyword; got {name!r}"
        )
    if name in sys.stdlib_module_names or name in ("symbiont", "test", "tests"):
        raise ValueError(
            f"NAME {name!r} is the name of a module Python or Symbiont has already; "
            "it would hide that module on the node's python_path: pick another one"
        )


def new(name: str, parent: Path) -> Path:
    """Create the project ``parent/name`` (see the module docstring); returns its path.

    Raises ``ValueError`` for a bad ``name`` and ``FileExistsError`` when the directory
    exists.
    """
    _check_name(name)
    directory = parent / name
    if directory.exists():
        raise FileExistsError(f"{directory} exists already: not writing into it")
    cls = _class_name(name)
    absolute = directory.resolve()
    fields = {
        "name": name,
        "cls": cls,
        "config": absolute / "config.exs",
        "directory": absolute,
    }
    files = {
        f"{name}.py": _AGENT,
        f"test_{name}.py": _TEST,
        "config.exs": _CONFIG,
        "README.md": _README,
    }
    directory.mkdir(parents=True)
    for file, template in files.items():
        (directory / file).write_text(template.format(**fields))
    return directory


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symbiont",
        description="Symbiont's developer commands (the node itself runs with mix: see its "
        "README).",
    )
    parser.add_argument("--version", action="version", version=f"symbiont {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    scaffold = commands.add_parser(
        "new",
        help="create an agent project: the agent, its test, its config",
        description="Create the directory NAME (in --dir) with an agent, its pytest test, "
        "a config.exs that runs it under a Symbiont node, and a README.",
    )
    scaffold.add_argument("name", metavar="NAME", help="the agent's module name, e.g. billing")
    scaffold.add_argument(
        "--dir",
        default=Path("."),
        type=Path,
        help="where to create the directory NAME (default: the current directory)",
    )
    wasm = commands.add_parser(
        "build-wasm",
        help="build a Python agent class into a sandboxed Wasm component",
        description="Build the agent class Class of path/file.py, unchanged, into a Wasm "
        "component of the symbiont:agent world (wit/agent.wit) with componentize-py "
        "(pip install 'symbiont[wasm-build]'); run it with wasm: in the manifest. A cold "
        "build takes tens of seconds.",
    )
    wasm.add_argument("target", metavar="path/file.py:Class", help="the agent class to build")
    wasm.add_argument("-o", "--output", required=True, type=Path, help="the component to write")
    wasm.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="keep built components here, by the hash of their sources, and reuse them",
    )
    wasm.add_argument(
        "--precompile",
        action="store_true",
        help="also compile it into the hosts' compiled-module cache ($SYMBIONT_WASM_CACHE, "
        "else ~/.cache/symbiont/wasm), so the first host loads it in milliseconds, not "
        "tens of seconds",
    )
    return parser


def _build_wasm(args: argparse.Namespace) -> int:
    from ._componentize import BuildError, build  # noqa: PLC0415

    try:
        out = build(args.target, args.output, args.cache_dir)
        if args.precompile:
            from .wasm import Runtime, WasmError  # noqa: PLC0415

            runtime = Runtime()
            try:
                runtime.load(out)
            except WasmError as exc:
                raise BuildError(f"{out} does not compile: {exc}") from None
            finally:
                runtime.close()
    except BuildError as exc:
        print(f"symbiont build-wasm: {exc}", file=sys.stderr)
        return 1
    print(f"built {out} ({out.stat().st_size // 1024} KiB): run it with wasm: {str(out)!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``symbiont`` command with ``argv`` (default: the process's); returns the
    exit status (2 for bad usage, 1 for a directory that exists or a build that failed)."""
    args = _parser().parse_args(argv)
    if args.command == "build-wasm":
        return _build_wasm(args)
    try:
        directory = new(args.name, args.dir)
    except ValueError as exc:
        print(f"symbiont new: {exc}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        print(f"symbiont new: {exc}", file=sys.stderr)
        return 1
    print(f"created {directory}: {', '.join(sorted(p.name for p in directory.iterdir()))}")
    print(f"test it:  cd {directory} && pytest")
    print(f"run it:   SYMBIONT_CONFIG={directory.resolve() / 'config.exs'} make run")
    print("          (from a Symbiont checkout; see its README.md)")
    return 0
