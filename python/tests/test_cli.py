"""The ``symbiont`` command (symbiont._cli; ``python -m symbiont`` runs the same main):
``symbiont new NAME`` makes a project whose own test passes and whose config.exs a node
reads; bad names and existing directories are refused with a clear error."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from conftest import ROOT

import symbiont
from symbiont._cli import main


def symbiont_cmd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "symbiont", *args], capture_output=True, text=True, cwd=cwd
    )


def plugin_args() -> list[str]:
    """``-p symbiont.pytest_plugin`` unless the installed package registers the plugin
    already (its pytest11 entry point): loaded twice, pluggy would refuse it."""
    names = {ep.name for ep in entry_points(group="pytest11")}
    return [] if "symbiont" in names else ["-p", "symbiont.pytest_plugin"]


def test_the_console_script_is_this_main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"symbiont": "symbiont._cli:main"}
    assert project["entry-points"]["pytest11"] == {"symbiont": "symbiont.pytest_plugin"}


def test_new_makes_a_project_whose_test_passes(tmp_path: Path) -> None:
    made = symbiont_cmd("new", "ledger", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    project = tmp_path / "ledger"
    assert f"created {project}" in made.stdout
    assert sorted(p.name for p in project.iterdir()) == [
        "README.md",
        "config.exs",
        "ledger.py",
        "test_ledger.py",
    ]
    assert "agent_harness" in (project / "test_ledger.py").read_text()
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin_args()],
        capture_output=True,
        text=True,
        cwd=project,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed" in tested.stdout
    readme = (project / "README.md").read_text()
    assert f"SYMBIONT_CONFIG={project / 'config.exs'} make run" in readme


@pytest.mark.skipif(shutil.which("elixir") is None, reason="no elixir on PATH")
def test_the_config_it_writes_is_one_a_node_reads(tmp_path: Path) -> None:
    assert main(["new", "ledger", "--dir", str(tmp_path)]) == 0
    config = tmp_path / "ledger" / "config.exs"
    read = subprocess.run(
        ["elixir", "-e", f'IO.inspect(Config.Reader.read!("{config}"), limit: :infinity)'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f'python_path: ["{tmp_path / "ledger"}"]' in read.stdout
    assert 'agents: [[name: "ledger", python: "ledger:Ledger"]]' in read.stdout


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Bad-Name", "NAME must be a Python module name in lower case"),
        ("class", "not a keyword; got 'class'"),
        ("9lives", "NAME must be a Python module name"),
        ("json", "NAME 'json' is the name of a module Python or Symbiont has already"),
        ("symbiont", "NAME 'symbiont' is the name of a module"),
    ],
)
def test_bad_names_are_refused(tmp_path: Path, name: str, message: str) -> None:
    refused = symbiont_cmd("new", name, "--dir", str(tmp_path))
    assert refused.returncode == 2
    assert refused.stderr.startswith("symbiont new: ") and message in refused.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_existing_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "ledger").mkdir()
    (tmp_path / "ledger" / "mine.txt").write_text("keep")
    refused = symbiont_cmd("new", "ledger", "--dir", str(tmp_path))
    assert refused.returncode == 1
    assert "ledger exists already: not writing into it" in refused.stderr
    assert [p.name for p in (tmp_path / "ledger").iterdir()] == ["mine.txt"]


def test_help_and_version() -> None:
    helped = symbiont_cmd("--help")
    assert helped.returncode == 0 and "new" in helped.stdout and "--version" in helped.stdout
    new_help = symbiont_cmd("new", "--help")
    assert new_help.returncode == 0 and "--dir" in new_help.stdout
    version = symbiont_cmd("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"symbiont {symbiont.__version__}"
    bare = symbiont_cmd()
    assert bare.returncode == 2 and "required: COMMAND" in bare.stderr
