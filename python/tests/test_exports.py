"""The public API is what the docs say it is (STYLE.md habit 15)."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import symbiont
from symbiont import erlang

EXPECTED = {
    "Agent",
    "Atom",
    "CallTimeout",
    "CancelledError",
    "ErlangError",
    "FrameTooLarge",
    "Health",
    "OpaqueTerm",
    "OverloadedError",
    "Pid",
    "Ref",
    "ReservedTopicError",
    "TopicLimitError",
    "erlang",
    "every",
    "on",
}


def test_all_names_exist_and_are_documented() -> None:
    assert set(symbiont.__all__) == EXPECTED
    for name in symbiont.__all__:
        obj = getattr(symbiont, name)
        assert inspect.getdoc(obj), f"symbiont.{name} has no docstring"
        assert "TODO" not in (inspect.getdoc(obj) or "")


def test_one_version_for_both_languages() -> None:
    # mix.exs, pyproject.toml (the installed distribution) and symbiont.__version__ all
    # read the VERSION file.
    from importlib.metadata import version  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2]
    expected = (root / "VERSION").read_text().strip()
    assert symbiont.__version__ == expected
    assert version("symbiont") == expected
    assert '"VERSION"' in (root / "mix.exs").read_text()


def test_public_functions_and_methods_are_documented() -> None:
    for name in erlang.__all__:
        assert inspect.getdoc(getattr(erlang, name)), f"erlang.{name}"
    for name, member in vars(symbiont.Agent).items():
        if callable(member) and not name.startswith("_"):
            assert inspect.getdoc(member), f"Agent.{name}"


def test_the_wasm_module_is_documented() -> None:
    from symbiont import wasm

    assert set(wasm.__all__) == {
        "ABI_VERSION",
        "GRANTS",
        "HEALTH_KINDS",
        "LOG_LINES_PER_CALL",
        "LOG_LINE_BYTES",
        "Imports",
        "Instance",
        "Limits",
        "Runtime",
        "WasmAgent",
        "WasmError",
        "WasmPlugin",
        "default_runtime",
        "is_component",
    }
    for name in wasm.__all__:
        obj = getattr(wasm, name)
        if callable(obj):
            assert inspect.getdoc(obj), f"symbiont.wasm.{name} has no docstring"
            fields = (
                {f.name for f in dataclasses.fields(obj)}
                if dataclasses.is_dataclass(obj)
                else set()
            )
            for attr, member in vars(obj).items() if inspect.isclass(obj) else ():
                if callable(member) and not attr.startswith("_") and attr not in fields:
                    assert inspect.getdoc(member), f"symbiont.wasm.{name}.{attr}"
        if inspect.isclass(obj):
            # Its public home, whatever private module defines it: the error type a
            # failed Wasm call gives on the wire is "symbiont.wasm.WasmError".
            assert obj.__module__ == "symbiont.wasm", name


def test_the_testing_module_is_documented() -> None:
    from symbiont import testing

    assert testing.__all__ == ["AgentHarness"]
    assert inspect.getdoc(testing.AgentHarness)
    for name, member in vars(testing.AgentHarness).items():
        if not name.startswith("_") and (callable(member) or isinstance(member, property)):
            assert inspect.getdoc(member), f"AgentHarness.{name}"


def test_exception_names_on_the_wire() -> None:
    from symbiont._errors import qualified_name

    assert qualified_name(symbiont.ErlangError) == "symbiont.ErlangError"
    assert qualified_name(symbiont.CallTimeout) == "symbiont.CallTimeout"
    assert qualified_name(symbiont.FrameTooLarge) == "symbiont.FrameTooLarge"
    assert issubclass(symbiont.CancelledError, BaseException)
    assert not issubclass(symbiont.CancelledError, Exception)


def test_erlang_functions_outside_a_host() -> None:
    import pytest

    for call in (
        lambda: erlang.call("erlang", "node"),
        lambda: erlang.cast("erlang", "node"),
        lambda: erlang.send(symbiont.Atom("x"), 1),
        lambda: erlang.set_message_handler(print),
    ):
        with pytest.raises(RuntimeError, match="not running inside a symbiont host"):
            call()
    with pytest.raises(TypeError, match="args must be a list or tuple"):
        erlang.call("erlang", "node", "abc")
    with pytest.raises(TypeError, match="dest must be"):
        erlang.send(1, 1)  # type: ignore[arg-type]


def test_import_does_not_load_wasmtime() -> None:
    code = "import sys, symbiont, symbiont.erlang; print('wasmtime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
