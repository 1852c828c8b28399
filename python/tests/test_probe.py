"""``symbiont._probe.check_agent``: whether an agent can start, without starting it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from symbiont._probe import check_agent

AGENT = "symbiont.Agent"
WASM = Path(__file__).resolve().parents[2] / "priv" / "wasm"


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path`` for modules written by a test (forgotten afterwards)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        sys.modules.pop(name, None)


def spec(module: str, cls: str, config: dict | None = None) -> dict:
    return {"name": "a", "module": module, "class": cls, "config": config or {}}


def test_an_agent_that_can_start_passes_and_its_on_start_does_not_run(modules: Path) -> None:
    marker = modules / "started"
    (modules / "fine_agent.py").write_text(
        "from symbiont import Agent\n"
        "class Fine(Agent):\n"
        "    def on_start(self):\n"
        f"        open({str(marker)!r}, 'w').close()\n"
    )
    assert check_agent(spec("fine_agent", "Fine")) is None
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "cls", "type_", "message"),
    [
        ("nosuch_module", "Thing", "ModuleNotFoundError", "No module named 'nosuch_module'"),
        ("json", "NoSuchClass", "AttributeError", "module 'json' has no attribute 'NoSuchClass'"),
        ("json", "JSONDecoder", "TypeError", "json.JSONDecoder is not a subclass of " + AGENT),
    ],
)
def test_a_missing_module_or_class_or_not_an_agent(
    module: str, cls: str, type_: str, message: str
) -> None:
    error = check_agent(spec(module, cls))
    assert error is not None
    assert (error["type"], error["message"], error["where"]) == (type_, message, "")
    assert error["traceback"].startswith("Traceback (most recent call last)")


def test_init_raising_and_import_exiting_say_where(modules: Path) -> None:
    (modules / "bad_init.py").write_text(
        "from symbiont import Agent\n"
        "class Bad(Agent):\n"
        "    def __init__(self, name, **kw):\n"
        "        super().__init__(name, **kw)\n"
        "        raise RuntimeError('no database: ' + self.config['db'])\n"
    )
    error = check_agent(spec("bad_init", "Bad", {"db": "x"}))
    assert error is not None
    assert (error["type"], error["message"]) == ("RuntimeError", "no database: x")
    assert error["where"] == "bad_init.py:5 in __init__"

    (modules / "exits.py").write_text("import sys\nsys.exit('not today')\n")
    error = check_agent(spec("exits", "Anything"))
    assert error is not None
    assert (error["type"], error["message"], error["where"]) == (
        "SystemExit",
        "not today",
        "exits.py:2 in <module>",
    )


def wasm_spec(path: Path | str) -> dict:
    config = {"wasm": str(path), "topics": ["t"], "limits": {}, "config": None}
    return spec("symbiont.wasm", "WasmAgent", config)


def test_a_wasm_module_is_compiled_and_instantiated(tmp_path: Path) -> None:
    assert check_agent(wasm_spec(WASM / "counter.wat")) is None

    garbage = tmp_path / "garbage.wasm"
    garbage.write_bytes(b"\x01\xff" * 64)
    error = check_agent(wasm_spec(garbage))
    assert error is not None
    assert error["type"] == "symbiont.wasm.WasmError"
    assert error["message"].startswith(f"load: {garbage} is neither a Wasm binary nor WAT text")

    no_abi = tmp_path / "no_abi.wat"
    no_abi.write_text('(module (memory (export "memory") 1))')
    error = check_agent(wasm_spec(no_abi))
    assert error is not None
    assert "does not export symbiont_abi_version" in error["message"]
