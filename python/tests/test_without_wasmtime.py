"""``pip install symbiont`` without wasmtime (an extra: ``symbiont[wasm]``): the SDK
imports, Python agents run (in an AgentHarness and in a real host), and Wasm says what to
install. wasmtime is made unimportable by a ``sitecustomize`` on the test's PYTHONPATH,
as if it were not installed."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT, HostProcess, host_env
from test_agent import agent_spec, event, wasm_spec

from symbiont._terms import packb

BLOCKER = '''
import sys


class _NoWasmtime:
    """wasmtime is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "wasmtime" or name.startswith("wasmtime."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoWasmtime())
'''

SCRIPT = """
import sys

import symbiont, symbiont.erlang, symbiont.testing, symbiont.wasm
from symbiont import Agent, on
from symbiont.testing import AgentHarness


class Echo(Agent):
    @on("in")
    async def handle(self, payload):
        await self.apublish("out", payload)


assert AgentHarness(Echo).event("in", 1) == [("out", 1)]
try:
    symbiont.wasm.Runtime()
except ImportError as exc:
    print(exc)
print("wasmtime" in sys.modules)
"""

INSTALL = "pip install 'symbiont[wasm]'"


@pytest.fixture
def no_wasmtime(tmp_path: Path) -> dict[str, str]:
    """An environment where ``import wasmtime`` fails."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = host_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    return env


def test_wasmtime_is_an_extra_of_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("wasmtime")]
    assert project["optional-dependencies"]["wasm"] == ["wasmtime>=20"]
    assert "wasmtime>=20" in project["optional-dependencies"]["dev"]  # the tests need it


def test_the_sdk_runs_agents_without_wasmtime(no_wasmtime: dict[str, str]) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=no_wasmtime
    )
    assert ran.returncode == 0, ran.stderr
    error, imported = ran.stdout.strip().splitlines()
    assert error == (
        "Wasm modules need wasmtime, which is not installed: "
        f"{INSTALL} (Python agents run without it)"
    )
    assert imported == "False"


def test_a_host_runs_python_agents_without_wasmtime_and_says_what_wasm_needs(
    no_wasmtime: dict[str, str],
) -> None:
    host = HostProcess(env=no_wasmtime)
    try:
        host.init()
        assert host.start_agent(agent_spec("Counter"))[0] == "agent_ready"
        host.send(event(1, "numbers", 5))
        assert host.recv_kind("publish")[2:4] == ["sums", packb(5)]
        assert host.recv_kind("ack")[1:3] == [1, 1]
        failed = host.start_agent(wasm_spec("count", "counter.wat", "c.in"), slot=2)
        assert failed[0] == "agent_failed"
        assert failed[2]["type"] == "ImportError"
        assert INSTALL in failed[2]["message"]
        assert host.call("sys", "modules.__contains__", "wasmtime")[2] is False
    finally:
        host.stop()
