"""``symbiont build-wasm``: a Python agent class, built into a Wasm component.

The component implements the ``symbiont:agent`` world (``wit/agent.wit``, docs/WASM_ABI.md
"Components") with componentize-py (``pip install 'symbiont[wasm-build]'``): the agent's
module, the SDK's pure-Python part, msgpack's pure-Python codec and the guest shim
(:mod:`symbiont._guest`) are staged in a directory of their own and componentized; the
agent's class runs unchanged inside.

A build takes tens of seconds and makes a component of some 18 MB: :func:`build` keeps
each one in a cache directory (when given one), named by the SHA-256 of everything that
went into it, so the same sources are built once, also by builds running at once (a
lock file beside the component: the second waits for the first, then copies its result).
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: The WIT world of agents, shipped with the package (``wit/`` in a checkout links here).
WIT_DIR = Path(__file__).parent / "wit"
WORLD = "agent"
# The SDK modules the guest imports (symbiont/__init__ and what it imports, and the shim).
_SDK_FILES = (
    "__init__.py",
    "_agent.py",
    "_aio.py",
    "_contract.py",
    "contract.json",
    "_errors.py",
    "_guest.py",
    "_health.py",
    "_terms.py",
    "erlang.py",
)
# What an agent in the sandbox cannot call (symbiont._guest refuses it at run time too).
_UNAVAILABLE = {
    "call": "it cannot call into the BEAM",
    "acall": "it cannot call into the BEAM",
    "wasm": "it has no Wasm plug-ins",
}


class BuildError(Exception):
    """The agent cannot be built into a component; the message says why."""


def parse_target(target: str) -> tuple[Path, str]:
    """``path/file.py:Class`` as the file and the class name (a ``BuildError`` if not)."""
    path, sep, class_name = target.rpartition(":")
    if not sep or not path.endswith(".py") or not class_name.isidentifier():
        raise BuildError(
            f"target {target!r}: expected path/file.py:Class, e.g. "
            "examples/demo/demo_agents.py:Billing"
        )
    file = Path(path)
    if not file.is_file():
        raise BuildError(f"target {target!r}: {file} is not a file")
    return file, class_name


_PARSING = threading.Lock()


def check_source(file: Path, class_name: str) -> None:
    """Refuse, before building, a class that uses what the sandbox cannot offer
    (``self.call``, ``self.acall``, ``self.wasm``), naming the line."""
    source = file.read_bytes()
    with _PARSING:  # CPython 3.11's parser is not thread-safe ("recursion depth mismatch")
        tree = ast.parse(source, filename=str(file))
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name]
    if not classes:
        raise BuildError(f"{file} defines no class {class_name}")
    for node in ast.walk(classes[0]):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and node.attr in _UNAVAILABLE
        ):
            raise BuildError(
                f"{file}:{node.lineno}: {class_name} uses self.{node.attr}, which an agent in "
                f"the Wasm sandbox cannot use: {_UNAVAILABLE[node.attr]} (run it as a python: "
                "agent for that)"
            )


def _componentize_version() -> str:
    try:
        return version("componentize-py")
    except PackageNotFoundError:
        raise BuildError(
            "componentize-py is not installed: pip install 'symbiont[wasm-build]'"
        ) from None


def _sources(file: Path) -> list[tuple[str, bytes]]:
    """What goes into a component, by name: the agent's file, the SDK, the WIT and
    msgpack's Python files."""
    import msgpack  # noqa: PLC0415

    sdk = Path(__file__).parent
    files = [(f"agent/{file.name}", file.read_bytes())]
    files += [(f"symbiont/{name}", (sdk / name).read_bytes()) for name in _SDK_FILES]
    files += [(f"wit/{p.name}", p.read_bytes()) for p in sorted(WIT_DIR.glob("*.wit"))]
    msgpack_dir = Path(msgpack.__file__).parent
    files += [(f"msgpack/{p.name}", p.read_bytes()) for p in sorted(msgpack_dir.glob("*.py"))]
    return files


def build(
    target: str,
    out: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Build ``path/file.py:Class`` into the component ``out``; returns its path.

    With ``cache_dir``, a component built before from the same sources (the agent's file,
    the SDK, the WIT, msgpack and the componentize-py version) is copied from there
    instead. Raises :class:`BuildError` with componentize-py's own message when the build
    fails (an import the sandbox lacks, a syntax error).
    """
    file, class_name = parse_target(target)
    check_source(file, class_name)
    tool = _componentize_version()
    sources = _sources(file)
    digest = hashlib.sha256(f"{tool}\0{class_name}\0".encode())
    for name, data in sources:
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    key = digest.hexdigest()[:32]
    out = Path(out)
    if cache_dir is None:
        return _build(file, class_name, target, sources, out)
    cached = Path(cache_dir) / f"{file.stem}-{class_name}-{key}.wasm"
    with _locked(cached):
        if not cached.is_file():
            _build(file, class_name, target, sources, cached)
    _copy(cached, out)
    return out


@contextlib.contextmanager
def _locked(cached: Path) -> Iterator[None]:
    """Hold the build lock of ``cached`` (one build of the same sources at a time, across
    processes): an exclusive ``flock`` of the lock file beside it."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    with open(cached.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(
    file: Path, class_name: str, target: str, sources: list[tuple[str, bytes]], out: Path
) -> Path:
    """Componentize ``sources`` (see :func:`build`) into ``out``."""
    with tempfile.TemporaryDirectory(prefix="symbiont-build-") as tmp:
        stage = Path(tmp)
        for name, data in sources:
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            (stage / name).write_bytes(data)
        module = file.stem
        (stage / "agent" / "_symbiont_app.py").write_text(
            f"from symbiont._guest import world\n\nWitWorld = world({module!r}, {class_name!r})\n"
        )
        built = stage / "component.wasm"
        command = [
            sys.executable,
            "-c",
            "import sys; from componentize_py import script; "
            "sys.argv[0] = 'componentize-py'; sys.exit(script())",
            "-d",
            str(stage / "wit"),
            "-w",
            WORLD,
            "componentize",
            "_symbiont_app",
            "-p",
            str(stage / "agent"),
            "-p",
            str(stage),
            "-p",
            str(file.resolve().parent),
            "-o",
            str(built),
        ]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=stage)
        if run.returncode != 0 or not built.is_file():
            # componentize-py's message (the agent's module's traceback), without the
            # Rust backtrace that follows it.
            text = (run.stderr or run.stdout).split("Stack backtrace:")[0].strip()
            detail = text.split("\nCaused by:")[0].strip().splitlines()
            raise BuildError(
                f"componentize-py could not build {target}:\n" + "\n".join(detail[-20:])
            )
        _copy(built, out)
    return out


def _copy(src: Path, dst: Path) -> None:
    """Copy through a temporary file and a rename: a reader never sees half of one."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as an open() would make it, not mkstemp's 600
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
