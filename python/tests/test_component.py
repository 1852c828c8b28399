"""A Python agent class, native and built into a Wasm component (``symbiont build-wasm``):
one test file, both forms, through AgentHarness. The component is built once (tens of
seconds) and kept in _build/wasm-components by the hash of its sources."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from symbiont._componentize import BuildError, build, check_source, parse_target
from symbiont._guest import SandboxError
from symbiont.testing import AgentHarness
from symbiont.wasm import WasmError, is_component

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "test" / "fixtures" / "python"
sys.path.insert(0, str(FIXTURES))

from sandboxed_agents import Sandboxed  # noqa: E402


@pytest.fixture(scope="session")
def component() -> Path:
    out = ROOT / "_build" / "test-components" / "sandboxed_agents-Sandboxed.wasm"
    return build(
        f"{FIXTURES / 'sandboxed_agents.py'}:Sandboxed", out, ROOT / "_build" / "wasm-components"
    )


@pytest.fixture(params=["native", "wasm"])
def harness(request: pytest.FixtureRequest, agent_harness: Any) -> Any:
    def make(**options: Any) -> AgentHarness[Sandboxed]:
        if request.param == "wasm":
            options["wasm"] = request.getfixturevalue("component")
            # Not the 100 ms default: this machine may be loaded, and speed is for bench/.
            options.setdefault("limits", {"deadline_ms": 5000})
        return agent_harness(Sandboxed, **options)

    return make


def test_the_same_class_counts_publishes_reports_and_keeps_its_state(harness: Any) -> None:
    counter = harness(name="counter", state={"n": 10, "total": 100})
    assert counter.event("sandboxed.count", 5) == [("sandboxed.counted", {"n": 11, "total": 105})]
    assert counter.event("sandboxed.count", 1) == [("sandboxed.counted", {"n": 12, "total": 106})]
    assert counter.tick("beat") == []
    assert counter.state == {"n": 12, "total": 106, "beats": 1}

    counter.restart()  # from the last checkpoint, as after a crash of its host
    assert counter.event("sandboxed.count", 1) == [("sandboxed.counted", {"n": 13, "total": 107})]
    assert counter.health == []
    with pytest.raises(LookupError, match="no timer 'nope'"):
        counter.tick("nope")


def test_a_failed_event_leaves_the_state_as_it_was(harness: Any) -> None:
    counter = harness(name="counter")
    counter.event("sandboxed.count", 1)
    # total + "x": a TypeError in either form (a WasmError that says so in the sandbox).
    with pytest.raises((TypeError, WasmError), match="unsupported operand"):
        counter.event("sandboxed.count", "x")
    assert counter.state == {"n": 1, "total": 1}
    assert counter.event("sandboxed.count", 1) == [("sandboxed.counted", {"n": 2, "total": 2})]


def test_in_the_sandbox_a_failed_event_publishes_nothing(
    component: Path, agent_harness: Any
) -> None:
    # Natively, a publish goes out at once; in the sandbox, only when the call succeeds.
    agent = agent_harness(Sandboxed, wasm=component, limits={"deadline_ms": 5000})
    with pytest.raises(WasmError, match="sys.exit"):
        agent.event("sandboxed.exit", 3)
    assert agent.published == []


@pytest.mark.parametrize(
    "value",
    [b"", bytes(range(256)), bytes(range(256)) * 4096, {"a": [1, 2.5, None, "é"]}, "x" * 70000],
)
def test_payloads_cross_the_sandbox_unchanged(harness: Any, value: Any) -> None:
    # list<u8> in and out of a component (payloads, states) in bulk, every byte value.
    echo = harness(name="echo")
    assert echo.event("sandboxed.echo", value) == [("sandboxed.echoed", value)]


def test_health_from_inside_the_sandbox(harness: Any) -> None:
    counter = harness(name="counter")
    for i in range(3):
        counter.event("sandboxed.count", i)
    assert [(h["kind"], h["reason"]) for h in counter.health] == [("degraded", "third event")]


@pytest.mark.parametrize(
    ("topic", "payload", "kind", "text"),
    [
        ("sandboxed.loop", 1, "deadline", "ran past its 300 ms deadline"),
        ("sandboxed.file", "/etc/hostname", "capability", "has no files"),
        ("sandboxed.socket", 9, "capability", "has no sockets"),
        ("sandboxed.clock", 1, "capability", "'clock' was not granted"),
        ("sandboxed.random", 8, "capability", "'random' was not granted"),
        ("sandboxed.exit", 3, "error", r"sys.exit\(3\) was called"),
    ],
)
def test_the_sandbox_stops_hostile_python_with_a_clear_error(
    component: Path, agent_harness: Any, topic: str, payload: Any, kind: str, text: str
) -> None:
    deadline = 300 if topic == "sandboxed.loop" else 5000
    agent = agent_harness(Sandboxed, wasm=component, limits={"deadline_ms": deadline})
    with pytest.raises(WasmError, match=text) as info:
        agent.event(topic, payload)
    assert info.value.kind == kind
    # The next event is served, from the state before.
    assert agent.event("sandboxed.count", 1) == [("sandboxed.counted", {"n": 1, "total": 1})]


def test_clock_and_random_when_granted(component: Path, agent_harness: Any) -> None:
    agent = agent_harness(
        Sandboxed, wasm=component, limits={"grants": ["clock", "random"], "deadline_ms": 5000}
    )
    [(_, now)] = agent.event("sandboxed.clock", 1)
    assert now > 1_700_000_000
    [(_, data)] = agent.event("sandboxed.random", 16)
    assert isinstance(data, bytes) and len(data) == 16


def test_a_component_is_told_from_a_core_module_by_its_header(component: Path) -> None:
    assert is_component(component.read_bytes()[:8])
    assert not is_component(b"\0asm\x01\0\0\0")
    assert not is_component(b"(module)")


def test_builds_of_the_same_sources_at_once_run_one_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two builds at once (two test suites, two nodes starting): the second waits for the
    # first's lock, then copies the cached component; componentize-py runs once.
    import symbiont._componentize as componentize

    builds: list[Path] = []

    def slow_build(_file: Path, _cls: str, _target: str, _sources: Any, out: Path) -> Path:
        builds.append(out)
        time.sleep(0.3)  # long enough for the other thread to reach the lock
        out.write_bytes(b"\0asm component")
        return out

    monkeypatch.setattr(componentize, "_build", slow_build)
    target = f"{FIXTURES / 'sandboxed_agents.py'}:Sandboxed"
    outs = [tmp_path / f"out{i}.wasm" for i in range(2)]
    errors: list[BaseException] = []

    def build_to(out: Path) -> None:
        try:
            build(target, out, tmp_path / "cache")
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=build_to, args=(out,)) for out in outs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert len(builds) == 1 and builds[0].parent == tmp_path / "cache"
    assert [out.read_bytes() for out in outs] == [b"\0asm component"] * 2


def test_what_the_sandbox_cannot_offer_fails_the_build(tmp_path: Path) -> None:
    source = tmp_path / "caller.py"
    source.write_text(
        "from symbiont import Agent, on\n\n"
        "class Caller(Agent):\n"
        "    @on('t')\n"
        "    def go(self, value):\n"
        "        return self.call('erlang', 'node')\n"
    )
    with pytest.raises(BuildError, match=r"caller.py:6: Caller uses self.call, .* cannot call"):
        build(f"{source}:Caller", tmp_path / "out.wasm")
    with pytest.raises(BuildError, match="defines no class Nope"):
        check_source(source, "Nope")


@pytest.mark.parametrize("target", ["nofile", "x.py", "x.py:", "x.txt:Class", "x.py:not-id"])
def test_a_bad_target_says_what_is_expected(target: str) -> None:
    with pytest.raises(BuildError, match="expected path/file.py:Class|is not a file"):
        parse_target(target)


def test_the_guest_refusal_is_a_permission_error() -> None:
    assert issubclass(SandboxError, PermissionError)


# -- a component in another language: priv/wasm/counter_component.wat, by hand ------------

WAT_COMPONENT = ROOT / "priv" / "wasm" / "counter_component.wat"


def _wat_instance(**limits: Any) -> tuple[Any, list[Any]]:
    from symbiont._terms import unpackb
    from symbiont.wasm import Imports, Limits, Runtime

    out: list[Any] = []
    imports = Imports(publish=lambda topic, payload: out.append((topic, unpackb(payload))))
    runtime = Runtime(cache_dir=None)
    return runtime.instantiate(WAT_COMPONENT, Limits(**limits), imports, name="wc"), out


def test_a_hand_written_component_counts_and_resumes_its_state() -> None:
    from symbiont._terms import packb, unpackb

    instance, out = _wat_instance()
    assert instance.subscriptions() == [] and instance.timers() == {}
    for i in range(3):
        instance.call("t", packb(i))
    assert out == [("count.out", 1), ("count.out", 2), ("count.out", 3)]
    assert unpackb(instance.last_state) == 3
    instance.migrate(packb(2**31 + 5))  # a new instance, from that state
    instance.call("t", packb(0))
    assert out[-1] == ("count.out", 2**31 + 6)


def test_a_state_that_is_not_msgpack_fails_the_call_and_publishes_nothing() -> None:
    from symbiont._terms import packb, unpackb

    instance, out = _wat_instance()
    instance.call("t", packb(1))
    with pytest.raises(WasmError, match="state wc.handle returned is not one msgpack value") as e:
        instance.call("t", packb(None))  # counter_component.wat returns 0xc1 for nil
    assert e.value.kind == "abi"
    assert unpackb(instance.last_state) == 1
    instance.call("t", packb(1))  # rebuilt from the last good state
    assert out == [("count.out", 1), ("count.out", 2)]


@pytest.mark.parametrize(
    ("wat", "error"),
    [
        ("(component)", "does not export init, subscriptions, timers, handle, tick, snapshot"),
        (
            '(component (core module $m (func (export "f") (result i32) i32.const 1))'
            " (core instance $i (instantiate $m))"
            ' (func (export "init") (result u32) (canon lift (core func $i "f")))'
            ' (func (export "subscriptions") (result u32) (canon lift (core func $i "f")))'
            ' (func (export "timers") (result u32) (canon lift (core func $i "f")))'
            ' (func (export "handle") (result u32) (canon lift (core func $i "f")))'
            ' (func (export "tick") (result u32) (canon lift (core func $i "f")))'
            ' (func (export "snapshot") (result u32) (canon lift (core func $i "f"))))',
            "does not have the type of the symbiont:agent world",
        ),
    ],
)
def test_a_component_of_another_world_is_refused_with_what_is_wrong(
    tmp_path: Path, wat: str, error: str
) -> None:
    from symbiont.wasm import Runtime

    path = tmp_path / "other.wat"
    path.write_text(wat)
    with pytest.raises(WasmError, match=error) as e:
        Runtime(cache_dir=None).instantiate(path, name="other")
    assert e.value.kind == "abi"


def test_a_component_is_not_a_plugin() -> None:
    from symbiont import Agent

    agent = Agent("shop", config={"wasm": {"counter": str(WAT_COMPONENT)}})
    with pytest.raises(ValueError, match="a component is an agent .* not a plug-in"):
        agent.wasm("counter")


def test_a_component_runs_on_fuel_when_the_manifest_sets_it() -> None:
    from symbiont._terms import packb

    with pytest.raises(WasmError, match="used up its 3 units of fuel") as e:
        _wat_instance(fuel=3)
    assert e.value.kind == "fuel"
    instance, out = _wat_instance(fuel=10_000)
    instance.call("t", packb(1))
    assert out == [("count.out", 1)]


def test_what_the_host_refuses_in_an_import_fails_the_call_with_its_error() -> None:
    from symbiont._errors import TopicLimitError
    from symbiont._terms import packb
    from symbiont.wasm import Imports, Runtime

    def refuse(topic: str) -> None:
        raise TopicLimitError(f"{topic!r} would be one topic too many")

    out: list[Any] = []
    imports = Imports(publish=lambda *event: out.append(event), check_topic=refuse)
    instance = Runtime(cache_dir=None).instantiate(WAT_COMPONENT, imports=imports, name="wc")
    with pytest.raises(WasmError, match="'count.out' would be one topic too many") as e:
        instance.call("t", packb(1))
    assert e.value.kind == "abi" and out == []


def test_the_command_builds_and_says_what_went_wrong(
    component: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from symbiont._cli import main

    out = tmp_path / "agent.wasm"
    cache = ROOT / "_build" / "wasm-components"  # the build of `component`, reused
    target = f"{FIXTURES / 'sandboxed_agents.py'}:Sandboxed"
    assert main(["build-wasm", target, "-o", str(out), "--cache-dir", str(cache)]) == 0
    assert out.read_bytes() == component.read_bytes()
    assert f"built {out}" in capsys.readouterr().out

    assert main(["build-wasm", "nope.py:Agent", "-o", str(out)]) == 1
    assert "symbiont build-wasm: target 'nope.py:Agent': nope.py is not a file" in (
        capsys.readouterr().err
    )
