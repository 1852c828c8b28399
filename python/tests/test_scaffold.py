"""python -m symbiont new: the scaffolded agent's own test passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_new_agent_and_its_test_pass(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "symbiont", "new", "ledger", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '[name: "ledger", python: "ledger:Ledger"]' in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.py", "test_ledger.py"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_bad_names_and_existing_files_are_refused(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "symbiont", "new", *args, "--dir", str(tmp_path)],
            capture_output=True,
            text=True,
        )

    bad = run("Bad-Name")
    assert bad.returncode == 2
    assert "NAME must be a Python module name in lower case" in bad.stderr
    assert run("class").returncode == 2
    assert run("ok").returncode == 0
    again = run("ok")
    assert again.returncode == 2 and "not overwriting" in again.stderr
