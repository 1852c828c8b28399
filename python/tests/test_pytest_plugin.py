"""symbiont's pytest plugin (symbiont.pytest_plugin): the ``agent_harness`` fixture, in a
pytest run of its own over a test file written here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import FIXTURES, PYTHON_SRC
from test_cli import plugin_args

TESTS = """
import asyncio

from async_agents import AsyncCounter, AsyncSleeper, AsyncWorker

from symbiont import CancelledError

from symbiont.testing import AgentHarness

made = []


def test_it_makes_harnesses(agent_harness):
    counter = agent_harness(AsyncCounter, name="c", state={"sum": 1})
    assert isinstance(counter, AgentHarness) and counter.name == "c"
    assert counter.event("numbers", 2) == [("sums", 3)]
    worker = agent_harness(AsyncWorker)
    assert worker.event("work", "a") == [("worked", "a")]
    made.append(worker.agent.worker)
    assert not made[0].done()


def test_what_it_made_was_closed_at_teardown():
    (task,) = made
    assert task.cancelled()


def test_options_are_the_harness_s(agent_harness):
    sleeper = agent_harness(AsyncSleeper, handler_timeout=0.01)
    try:
        sleeper.event("sleep", 30)
    except CancelledError as exc:
        assert "ran past its handler_timeout of 0.01 s" in str(exc)
    else:
        raise AssertionError("not cancelled")
"""


def test_the_agent_harness_fixture(tmp_path: Path) -> None:
    (tmp_path / "test_with_fixture.py").write_text(TESTS)
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            *plugin_args(),
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(PYTHON_SRC), str(FIXTURES)])},
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "3 passed" in ran.stdout
