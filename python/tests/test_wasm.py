"""The Wasm sandbox (symbiont.wasm) with real wasmtime and the modules of priv/wasm."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from symbiont import _wasmcall
from symbiont._agent import HEALTH_REASON_BYTES
from symbiont._terms import packb, unpackb
from symbiont.wasm import (
    ABI_VERSION,
    GRANTS,
    LOG_LINE_BYTES,
    Imports,
    Limits,
    Runtime,
    WasmError,
)

WASM = Path(__file__).resolve().parents[2] / "priv" / "wasm"


@pytest.fixture(scope="module", params=["direct", "public"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    """Every behaviour through both call paths: wasmtime's C API, and wasmtime-py's
    public API (what runs where the direct path is not supported)."""
    runtime = Runtime(cache_dir=None, direct=request.param == "direct")
    assert runtime.direct == (request.param == "direct")
    return runtime


def recording() -> tuple[Imports, list[tuple[Any, ...]]]:
    got: list[tuple[Any, ...]] = []
    imports = Imports(
        publish=lambda topic, payload: got.append(("publish", topic, unpackb(payload))),
        log=lambda level, text: got.append(("log", level, text)),
        health=lambda kind, reason: got.append(("health", kind, reason)),
        stdout=lambda data: got.append(("stdout", data)),
    )
    return imports, got


def test_echo_answers_with_topic_and_payload(runtime: Runtime) -> None:
    echo = runtime.instantiate(WASM / "echo.wat", name="echo")
    payload = {"id": 7, "items": [1.5, "x", None]}
    assert unpackb(echo.call("orders.created", packb(payload))) == ["orders.created", payload]
    # Bigger than the first page: the module grows its memory to fit.
    big = "y" * 200_000
    assert unpackb(echo.call("t", packb(big))) == ["t", big]


def test_imports_publish_log_and_health(runtime: Runtime) -> None:
    imports, got = recording()
    counter = runtime.instantiate(WASM / "counter.wat", imports=imports, name="counter")
    assert [unpackb(counter.call("tick", packb(None))) for _ in range(3)] == [1, 2, 3]
    # Log lines go out as they are written; publishes and health reports (events) when
    # the call has succeeded, in the order they were made.
    assert got == [
        ("log", 1, "counted"),
        ("publish", "count.out", 1),
        ("log", 1, "counted"),
        ("publish", "count.out", 2),
        ("log", 1, "counted"),
        ("publish", "count.out", 3),
        ("health", "degraded", "third message"),
    ]


def test_relay_republishes_the_payload_bytes_on_its_configured_topic(runtime: Runtime) -> None:
    imports, got = recording()
    topic = "chaos.b.out-" + "x" * 40  # a str8 header
    relay = runtime.instantiate(WASM / "relay.wat", imports=imports, config={"out": topic})
    payloads = [{"i": 1}, "é" * 20, list(range(40))]
    for n, payload in enumerate(payloads, 1):
        assert relay.call("in" * 20, packb(payload)) == packb(None)
        assert unpackb(relay.state() or b"") == n
    assert got == [("publish", topic, p) for p in payloads]
    fresh = runtime.instantiate(WASM / "relay.wat", imports=imports)  # no config
    fresh.migrate(relay.state() or b"")
    fresh.call("t", packb(0))
    assert got[-1] == ("publish", "relay.out", 0) and unpackb(fresh.state() or b"") == 4


def test_state_and_migrate(runtime: Runtime) -> None:
    old = runtime.instantiate(WASM / "counter.wat", name="v1")
    for _ in range(5):
        old.call("tick", b"\xc0")
    new = runtime.instantiate(WASM / "counter.wat", name="v2")
    new.migrate(old.state() or b"")
    assert unpackb(new.call("tick", b"\xc0")) == 6
    for value in (200, 300, 70_000):
        fresh = runtime.instantiate(WASM / "counter.wat", name="v3")
        fresh.migrate(packb(value))
        assert unpackb(fresh.call("tick", b"\xc0")) == value + 1


def test_after_a_failed_call_the_instance_is_rebuilt_with_its_last_good_state(
    runtime: Runtime,
) -> None:
    counter = runtime.instantiate(WASM / "counter.wat", name="counter")
    counter.call("tick", b"\xc0")
    counter.call("tick", b"\xc0")
    # counter.wat refuses inputs over 60 000 bytes (its allocator returns 0).
    with pytest.raises(WasmError) as failed:
        counter.call("tick", packb("z" * 70_000))
    assert failed.value.kind == "memory"
    assert "symbiont_alloc(70" in str(failed.value)
    assert unpackb(counter.call("tick", b"\xc0")) == 3


def test_a_trap_is_an_error_and_neighbours_keep_serving(runtime: Runtime) -> None:
    bad = runtime.instantiate(WASM / "trap.wat", name="bad")
    good = runtime.instantiate(WASM / "echo.wat", name="good")
    for _ in range(3):
        with pytest.raises(WasmError) as trapped:
            bad.call("t", packb(1))
        assert trapped.value.kind == "trap"
        assert "bad trapped: wasm `unreachable` instruction executed" in str(trapped.value)
        assert unpackb(good.call("t", packb(2))) == ["t", 2]


def test_an_endless_loop_is_interrupted_at_its_deadline(runtime: Runtime) -> None:
    """Not before the deadline, and soon after it: an uninterrupted loop never returns. How
    soon is a figure for a benchmark, not a test on a machine that may be loaded."""
    looping = runtime.instantiate(WASM / "loop.wat", limits=Limits(deadline_ms=60), name="loop")
    for _ in range(2):  # the second call runs on a rebuilt instance
        started = time.monotonic()
        with pytest.raises(WasmError) as interrupted:
            looping.call("t", packb(1))
        elapsed_ms = (time.monotonic() - started) * 1000
        assert interrupted.value.kind == "deadline"
        assert "ran past its 60 ms deadline" in str(interrupted.value)
        assert 60 <= elapsed_ms < 60 + 2_000


def test_fuel_limits_instructions(runtime: Runtime) -> None:
    looping = runtime.instantiate(WASM / "loop.wat", limits=Limits(fuel=10_000), name="loop")
    with pytest.raises(WasmError) as out_of_fuel:
        looping.call("t", packb(1))
    assert out_of_fuel.value.kind == "fuel"
    assert "used up its 10000 units of fuel" in str(out_of_fuel.value)
    # Fuel is per call: an echo with fuel keeps working.
    echo = runtime.instantiate(WASM / "echo.wat", limits=Limits(fuel=10_000), name="echo")
    for i in range(5):
        assert unpackb(echo.call("t", packb(i))) == ["t", i]


def test_a_memory_bomb_hits_the_cap(runtime: Runtime) -> None:
    cap = 2 * 1024 * 1024
    bomb = runtime.instantiate(WASM / "bomb.wat", limits=Limits(memory_bytes=cap), name="bomb")
    with pytest.raises(WasmError) as capped:
        bomb.call("t", packb(1))
    assert capped.value.kind == "memory"
    assert f"hit its memory cap of {cap} bytes" in str(capped.value)
    assert bomb.memory_size() <= cap


def test_capabilities_are_off_unless_granted(runtime: Runtime) -> None:
    denied = runtime.instantiate(WASM / "random.wat", name="dice")
    with pytest.raises(WasmError) as refused:
        denied.call("t", packb(1))
    assert refused.value.kind == "capability"
    assert "dice called wasi_snapshot_preview1.random_get" in str(refused.value)
    assert "'random' was not granted" in str(refused.value)

    granted = runtime.instantiate(
        WASM / "random.wat", limits=Limits(grants=frozenset({"random"})), name="dice"
    )
    first, second = (unpackb(granted.call("t", packb(1))) for _ in range(2))
    assert isinstance(first, bytes) and len(first) == 8 and first != second


_ABI = """(memory (export "memory") 1)
  (func (export "symbiont_abi_version") (result i32) (i32.const 1))
  (func (export "symbiont_alloc") (param i32) (result i32) (i32.const 1024))"""


def test_a_module_reaches_nothing_it_was_not_given(runtime: Runtime) -> None:
    """SECURITY.md: an import outside the ABI and WASI does not link; WASI has no
    directory to open; exiting the process only ends the call."""
    host_function = f"""(module (import "env" "system" (func $system (param i32) (result i32)))
      {_ABI}
      (func (export "symbiont_handle") (param i32 i32) (result i64)
        (drop (call $system (i32.const 0))) (i64.const 0)))"""
    with pytest.raises(WasmError) as refused:
        runtime.instantiate(host_function.encode(), name="sneaky")
    assert refused.value.kind == "load"
    assert "sneaky cannot be instantiated: unknown import: `env::system`" in str(refused.value)

    # path_open("/") in the first preopened directory (fd 3): there is none. The reply is
    # the errno, as a msgpack fixint.
    open_root = f"""(module
      (import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      {_ABI}
      (func (export "symbiont_handle") (param i32 i32) (result i64)
        (i32.store8 (i32.const 600) (i32.const 0x2f))
        (i32.store (i32.const 512) (call $open (i32.const 3) (i32.const 0) (i32.const 600)
          (i32.const 1) (i32.const 0) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0)
          (i32.const 700)))
        (i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 1))))"""
    errno = unpackb(runtime.instantiate(open_root.encode(), name="fs").call("t", packb(1)))
    assert errno == 8  # EBADF: no such directory handle

    leave = f"""(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      {_ABI}
      (func (export "symbiont_handle") (param i32 i32) (result i64)
        (call $exit (i32.const 7)) (i64.const 0)))"""
    with pytest.raises(WasmError) as exited:
        runtime.instantiate(leave.encode(), name="quitter").call("t", packb(1))
    assert exited.value.kind == "trap" and "exit status 7" in str(exited.value)


def test_compiled_modules_are_cached_by_content_and_engine(tmp_path: Path) -> None:
    cold = Runtime(cache_dir=tmp_path)
    cold.load(WASM / "echo.wat")
    assert cold.stats == {"compiled": 1, "cached": 0}
    [entry] = tmp_path.iterdir()
    assert entry.name.endswith(f"-{cold.fingerprint(False)}.cwasm")
    assert "wasmtime-" in entry.name

    warm = Runtime(cache_dir=tmp_path)
    echo = warm.instantiate(WASM / "echo.wat", name="echo")
    assert warm.stats == {"compiled": 0, "cached": 1}
    assert unpackb(echo.call("t", packb(1))) == ["t", 1]
    # Loaded again (thousands of agents of one module): neither compiled nor read again.
    assert warm.load(WASM / "echo.wat") is echo.module
    assert warm.stats == {"compiled": 0, "cached": 1}

    # Another engine configuration (fuel) is another entry.
    warm.load(WASM / "echo.wat", fuel=True)
    assert warm.stats == {"compiled": 1, "cached": 1}
    assert len(list(tmp_path.iterdir())) == 2

    # A corrupt entry is compiled again and replaced.
    entry.write_bytes(b"garbage")
    again = Runtime(cache_dir=tmp_path)
    again.load(WASM / "echo.wat")
    assert again.stats == {"compiled": 1, "cached": 0}
    assert Runtime(cache_dir=tmp_path).load(WASM / "echo.wat") is not None


def test_a_cache_entry_changed_under_a_loaded_module_leaves_it_whole(
    tmp_path: Path,
) -> None:
    # Entries are mapped from a private copy, unlinked once mapped (a mapping of the entry
    # itself would get SIGBUS when a `cp` rewrites it in place): nothing can change it.
    Runtime(cache_dir=tmp_path).load(WASM / "echo.wat")
    [entry] = tmp_path.iterdir()
    warm = Runtime(cache_dir=tmp_path)
    echo = warm.instantiate(WASM / "echo.wat", name="echo")
    assert warm.stats == {"compiled": 0, "cached": 1}
    assert list(tmp_path.iterdir()) == [entry]  # the copy is gone
    entry.write_bytes(b"\0" * 16)  # in place: truncated, rewritten
    assert unpackb(echo.call("t", packb(0))) == ["t", 0]
    garbage = tmp_path / "garbage.tmp"
    garbage.write_bytes(b"\0" * 16)
    os.replace(garbage, entry)
    assert unpackb(echo.call("t", packb(1))) == ["t", 1]
    assert unpackb(warm.instantiate(WASM / "echo.wat", name="again").call("t", packb(2))) == [
        "t",
        2,
    ]
    # A link in place of an entry is not followed: compiled again, and replaced.
    entry.unlink()
    entry.symlink_to(garbage.parent / "elsewhere.cwasm")
    again = Runtime(cache_dir=tmp_path)
    again.load(WASM / "echo.wat")
    assert again.stats == {"compiled": 1, "cached": 0}
    assert not entry.is_symlink()


def test_the_cache_is_used_only_while_it_is_the_users_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A compiled module is native code that Module.deserialize runs: a cache entry
    # someone else could write is code they could run in the host.
    made = tmp_path / "made" / "cache"
    Runtime(cache_dir=made).load(WASM / "echo.wat")
    assert made.stat().st_mode & 0o777 == 0o700

    # A directory others can write to: not used, said once, modules compiled.
    shared = tmp_path / "shared"
    shared.mkdir()
    Runtime(cache_dir=shared).load(WASM / "echo.wat")  # filled while it was private
    shared.chmod(0o777)
    runtime = Runtime(cache_dir=shared)
    with caplog.at_level(logging.WARNING, logger="symbiont.wasm"):
        runtime.load(WASM / "echo.wat")
        runtime.load(WASM / "echo.wat", fuel=True)
    assert runtime.stats == {"compiled": 2, "cached": 0}
    assert runtime.cache_refused == "other users can write to it (mode 777)"
    assert [r.getMessage() for r in caplog.records] == [
        f"the Wasm module cache {shared} is not used: other users can write to it (mode 777)"
    ]

    # An entry others can write to, in a private directory: compiled, and replaced by
    # one of the user's own.
    shared.chmod(0o700)
    [entry] = shared.iterdir()
    entry.chmod(0o666)
    runtime = Runtime(cache_dir=shared)
    runtime.load(WASM / "echo.wat")
    assert runtime.stats == {"compiled": 1, "cached": 0}
    assert entry.stat().st_mode & 0o022 == 0
    assert Runtime(cache_dir=shared).load(WASM / "echo.wat") is not None


@pytest.mark.skipif(os.getuid() != 0, reason="chown to another user needs root")
def test_a_cache_entry_of_another_user_is_not_run(tmp_path: Path) -> None:
    warm = Runtime(cache_dir=tmp_path)
    warm.load(WASM / "echo.wat")
    [entry] = tmp_path.iterdir()
    os.chown(entry, 65534, 65534)  # nobody
    runtime = Runtime(cache_dir=tmp_path)
    runtime.load(WASM / "echo.wat")
    assert runtime.stats == {"compiled": 1, "cached": 0}
    os.chown(tmp_path, 65534, 65534)
    refused = Runtime(cache_dir=tmp_path)
    refused.load(WASM / "echo.wat")
    assert refused.cache_refused is not None and "belongs to user 65534" in refused.cache_refused


def test_a_cache_on_a_full_disk_is_no_cache_and_leaves_nothing_behind(tmp_path: Path) -> None:
    # A real full disk: a tiny tmpfs (root only), filled up.
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here (run as root to include this test)")
    try:
        with open(disk / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 4096)
        runtime = Runtime(cache_dir=disk / "cache")
        echo = runtime.instantiate(WASM / "echo.wat", name="echo")
        assert unpackb(echo.call("t", packb(1))) == ["t", 1]
        assert runtime.stats == {"compiled": 1, "cached": 0}
        assert list((disk / "cache").iterdir()) == []
        # Space back: the cache works again.
        (disk / "filler").unlink()
        Runtime(cache_dir=disk / "cache").load(WASM / "echo.wat")
        assert [p.suffix for p in (disk / "cache").iterdir()] == [".cwasm"]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"deadline_ms": 0}, "deadline_ms: expected a positive integer up to 2**63 - 1, got 0"),
        ({"fuel": -5}, "fuel: expected a positive integer up to 2**63 - 1, got -5"),
        (
            {"memory_bytes": "1MB"},
            "memory_bytes: expected a positive integer up to 2**63 - 1, got '1MB'",
        ),
        ({"grants": frozenset({"network"})}, "'network' is not a capability"),
    ],
)
def test_bad_limits_name_the_field_and_what_is_allowed(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Limits(**kwargs)


def test_limits_from_a_manifest_map() -> None:
    limits = Limits.from_config({"deadline_ms": 50, "grants": ["clock"]})
    assert limits == Limits(deadline_ms=50, grants=frozenset({"clock"}))
    with pytest.raises(ValueError, match=r"'timeout' is not a Wasm limit \(allowed: deadline_ms"):
        Limits.from_config({"timeout": 5})


def test_modules_that_break_the_abi_are_refused_with_the_reason(runtime: Runtime) -> None:
    with pytest.raises(WasmError) as missing:
        runtime.instantiate(b'(module (memory (export "memory") 1))', name="empty")
    assert missing.value.kind == "abi"
    assert "does not export symbiont_abi_version, symbiont_alloc, symbiont_handle" in str(
        missing.value
    )

    future = (WASM / "echo.wat").read_text().replace("(i32.const 1))", "(i32.const 99))", 1)
    with pytest.raises(WasmError, match=f"implements ABI 99; this runtime speaks {ABI_VERSION}"):
        runtime.instantiate(future.encode(), name="future")

    wild = (
        (WASM / "echo.wat")
        .read_text()
        .replace("(i64.extend_i32_u (local.get $len))", "(i64.const 999999)")
    )
    pointer = runtime.instantiate(wild.encode(), name="wild")
    with pytest.raises(WasmError, match="pointed at bytes 1024..1001023 of a 65536-byte memory"):
        pointer.call("t", packb(1))


def test_load_errors(runtime: Runtime, tmp_path: Path) -> None:
    with pytest.raises(WasmError, match="cannot read .*nope.wasm"):
        runtime.load(tmp_path / "nope.wasm")
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\x00\xff\xfe")
    with pytest.raises(WasmError, match="neither a Wasm binary nor WAT text"):
        runtime.load(junk)
    with pytest.raises(WasmError, match="does not compile"):
        runtime.load(b"\0asm\x01\0\0\0\x05")


def test_a_host_that_runs_no_wasm_does_not_import_wasmtime() -> None:
    code = (
        "import sys, symbiont, symbiont.host, symbiont._host, symbiont.wasm; "
        "print('wasmtime' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_an_agent_written_in_c(runtime: Runtime) -> None:
    """priv/wasm/pricing.c, built by clang for wasm32-wasi as a reactor (make wasm)."""
    imports, got = recording()
    pricing = runtime.instantiate(WASM / "pricing.wasm", imports=imports, name="pricing")
    assert unpackb(pricing.call("orders.created", packb(10))) == 12.0
    assert unpackb(pricing.call("orders.created", packb(19.99))) == 23.99
    assert got == [
        ("publish", "pricing.priced", [10.0, 12.0]),
        ("publish", "pricing.priced", [19.99, 23.99]),
    ]

    # Its config sets the rate (symbiont_init).
    custom = runtime.instantiate(WASM / "pricing.wasm", name="pricing", config=2)
    assert unpackb(custom.call("t", packb(-3))) == -6.0

    # A payload that is not a number: an error and a log line, and the next one is served.
    got.clear()
    with pytest.raises(WasmError) as bad:
        pricing.call("orders.created", packb("ten"))
    assert bad.value.kind == "trap"
    assert got == [("log", 3, "pricing: the payload is not a number")]
    assert unpackb(pricing.call("orders.created", packb(1))) == 1.2
    assert (WASM / "pricing.wasm").stat().st_size < 8 * 1024


def test_a_python_agent_calls_a_wasm_plugin() -> None:
    from symbiont import Agent

    published: list[tuple[str, Any]] = []
    agent = Agent(
        "shop",
        config={
            "wasm": {
                "pricing": {"path": str(WASM / "pricing.wasm"), "config": 2, "deadline_ms": 50},
                "loop": str(WASM / "loop.wat"),
            }
        },
    )
    agent._publisher = lambda topic, payload: published.append((topic, unpackb(payload)))
    assert agent.wasm("pricing").call(21) == 42.0
    assert agent.wasm("pricing") is agent.wasm("pricing")  # one instance, kept
    assert published == [("pricing.priced", [21.0, 42.0])]

    with pytest.raises(WasmError) as interrupted:
        agent.wasm("loop").call(None)
    assert interrupted.value.kind == "deadline"
    assert "shop/loop ran past its 100 ms deadline" in str(interrupted.value)

    with pytest.raises(LookupError, match=r"no Wasm plug-in 'nope' \(declared: loop, pricing\)"):
        agent.wasm("nope")
    bad = Agent("shop", config={"wasm": {"p": {"path": "x.wasm", "timeout": 1}}})
    with pytest.raises(ValueError, match="Wasm plug-in 'p': 'timeout' is not a Wasm limit"):
        bad.wasm("p")


def test_the_direct_call_path_is_supported_by_this_wasmtime() -> None:
    # Else every host silently runs the public path, several times slower (bench/wasm.exs).
    assert _wasmcall.DIRECT
    assert Runtime(cache_dir=None).direct


def test_exports_of_the_wrong_type_are_refused_at_load(runtime: Runtime) -> None:
    echo = (WASM / "echo.wat").read_text()
    narrow = echo.replace(
        "(param $ptr i32) (param $len i32) (result i64)", "(param $ptr i32) (result i32)"
    ).replace(
        """(i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))""",
        "(local.get $ptr)",
    )
    with pytest.raises(WasmError) as refused:
        runtime.instantiate(narrow.encode(), name="narrow")
    assert refused.value.kind == "abi"
    assert str(refused.value) == (
        "abi: narrow exports symbiont_handle as (i32) -> i32; ABI 1 wants (i32, i32) -> i64"
    )
    table = echo.replace(
        '(memory (export "memory") 1)',
        '(memory (export "mem") 1) (table (export "memory") 1 funcref)',
    )
    with pytest.raises(WasmError, match="table exports memory, but it is not a memory"):
        runtime.instantiate(table.encode(), name="table")


def test_instances_of_one_module_share_its_code_but_nothing_else(runtime: Runtime) -> None:
    got: list[tuple[str, Any]] = []

    def imports(tag: str) -> Imports:
        return Imports(publish=lambda topic, payload: got.append((tag, unpackb(payload))))

    a = runtime.instantiate(WASM / "counter.wat", imports=imports("a"), name="a")
    b = runtime.instantiate(WASM / "counter.wat", imports=imports("b"), name="b")
    assert a.module is b.module
    for _ in range(3):
        a.call("t", b"\xc0")
    b.call("t", b"\xc0")
    # Each import call went to the instance that made it, with its own count.
    assert got == [("a", 1), ("a", 2), ("a", 3), ("b", 1)]
    assert unpackb(a.last_state or b"") == 3 and unpackb(b.state() or b"") == 1

    # Memory caps are per instance: a bomb with a small cap beside one with a big one.
    small = runtime.instantiate(WASM / "bomb.wat", limits=Limits(memory_bytes=1 << 20), name="s")
    big = runtime.instantiate(WASM / "bomb.wat", limits=Limits(memory_bytes=4 << 20), name="b")
    for bomb in (small, big):
        with pytest.raises(WasmError, match="memory cap"):
            bomb.call("t", packb(1))
    assert small.memory_size() <= 1 << 20 < big.memory_size() <= 4 << 20

    # A refused capability names the instance that asked, not another one of its module.
    first, second = (runtime.instantiate(WASM / "random.wat", name=n) for n in ("d1", "d2"))
    for dice in (second, first):
        with pytest.raises(WasmError, match=f"^capability: {dice.name} called"):
            dice.call("t", packb(1))


def test_an_exception_raised_by_an_import_comes_out_of_the_call(runtime: Runtime) -> None:
    class Refused(Exception):
        pass

    def publish(topic: str, payload: bytes) -> None:
        raise Refused(f"no room for {topic}")

    counter = runtime.instantiate(WASM / "counter.wat", imports=Imports(publish=publish), name="c")
    with pytest.raises(Refused, match="no room for count.out"):
        counter.call("t", b"\xc0")
    # Nothing of it is left behind: the next failure is its own, and the instance (rebuilt
    # from its last good state, none here) serves again.
    trap = runtime.instantiate(WASM / "trap.wat", name="trap")
    with pytest.raises(WasmError, match="trap trapped"):
        trap.call("t", packb(1))
    counter.imports.publish = lambda topic, payload: None
    assert unpackb(counter.call("t", b"\xc0")) == 1


# -- step 8: the sandbox's resources and outputs ------------------------------------------

FIXTURES = Path(__file__).resolve().parents[2] / "test" / "fixtures" / "wasm"


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_a_negative_pointer_is_out_of_bounds_not_a_native_read(runtime: Runtime) -> None:
    """log(1, -64, 64): the pointer is 2**32 - 64, far past the memory; as a signed
    number it used to pass the check and make the host read before linear memory."""
    wat = f"""(module (import "symbiont" "log" (func $log (param i32 i32 i32)))
      {_ABI}
      (func (export "symbiont_handle") (param i32 i32) (result i64)
        (call $log (i32.const 1) (i32.const -64) (i32.const 64)) (i64.const 0)))"""
    imports, got = recording()
    sneaky = runtime.instantiate(wat.encode(), imports=imports, name="sneaky")
    with pytest.raises(WasmError) as refused:
        sneaky.call("t", packb(1))
    assert str(refused.value) == (
        "abi: sneaky pointed at bytes 4294967232..4294967296 of a 65536-byte memory"
    )
    assert got == []


def test_tables_have_a_cap_and_a_refused_grow_fails_the_call_at_once(runtime: Runtime) -> None:
    """table_bomb.wat grows its table by the payload and traps when refused."""
    bomb = runtime.instantiate(FIXTURES / "table_bomb.wat", name="tables")
    assert unpackb(bomb.call("t", packb(5_000))) == 1  # 5,001 elements
    with pytest.raises(WasmError) as refused:  # 10,001 > table_elements (10,000)
        bomb.call("t", packb(5_000))
    assert str(refused.value) == "trap: tables trapped: wasm `unreachable` instruction executed"
    assert unpackb(bomb.call("t", packb(9_999))) == 1  # rebuilt: 10,000 is allowed
    # One grow of 100M elements (800 MB) is refused at once: a trap, not a deadline.
    with pytest.raises(WasmError) as huge:
        bomb.call("t", packb(100_000_000))
    assert huge.value.kind == "trap"
    # The cap is the instance's limit.
    roomy = runtime.instantiate(
        FIXTURES / "table_bomb.wat", limits=Limits(table_elements=20_000), name="roomy"
    )
    assert unpackb(roomy.call("t", packb(15_000))) == 1


def test_a_table_bomb_does_not_grow_the_host(runtime: Runtime) -> None:
    """5M elements (40 MB) an event: the host's memory stays where it was. (Uncapped,
    each event kept its table and the host grew by 40 MB an event.)"""
    bomb = runtime.instantiate(FIXTURES / "table_bomb.wat", name="bomb")
    with pytest.raises(WasmError):
        bomb.call("t", packb(5_000_000))
    before = _rss_bytes()
    for _ in range(10):
        with pytest.raises(WasmError, match="unreachable"):
            bomb.call("t", packb(5_000_000))
    assert _rss_bytes() - before < 64 * 1024 * 1024


def test_the_store_limits_count_tables_memories_and_their_sizes(runtime: Runtime) -> None:
    two_tables = f"""(module (table 1 funcref) (table 1 externref) {_ABI}
      (func (export "symbiont_handle") (param i32 i32) (result i64) (i64.const 0)))"""
    with pytest.raises(WasmError) as refused:
        runtime.instantiate(two_tables.encode(), name="t2")
    assert refused.value.kind == "load"
    assert "t2 cannot be instantiated: resource limit exceeded: table count too high" in str(
        refused.value
    )
    assert "tables 1" in str(refused.value)
    runtime.instantiate(two_tables.encode(), limits=Limits(tables=2), name="t2")

    two_memories = f"""(module (memory 1) {_ABI}
      (func (export "symbiont_handle") (param i32 i32) (result i64) (i64.const 0)))"""
    with pytest.raises(WasmError, match="memory count too high at 2 .*memories 1"):
        runtime.instantiate(two_memories.encode(), name="m2")
    runtime.instantiate(two_memories.encode(), limits=Limits(memories=2), name="m2")

    big_table = f"""(module (table 20000 funcref) {_ABI}
      (func (export "symbiont_handle") (param i32 i32) (result i64) (i64.const 0)))"""
    with pytest.raises(WasmError, match="table minimum size of 20000 elements exceeds"):
        runtime.instantiate(big_table.encode(), name="big")


@pytest.mark.parametrize(
    ("memory", "message"),
    [
        ("i64 1", "exports memory as a 64-bit memory"),
        ("1 1 shared", "exports memory as a shared memory"),
    ],
)
def test_only_a_32_bit_unshared_memory_is_accepted(
    runtime: Runtime, memory: str, message: str
) -> None:
    wat = _ABI.replace('(memory (export "memory") 1)', f'(memory (export "memory") {memory})')
    with pytest.raises(WasmError) as refused:
        runtime.instantiate(
            f"""(module {wat} (func (export "symbiont_handle") (param i32 i32) (result i64)
              (i64.const 0)))""".encode(),
            name="odd",
        )
    assert refused.value.kind == "abi"
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("mode", "limits", "kind"),
    [
        (1, Limits(deadline_ms=30), "deadline"),
        (1, Limits(fuel=100_000), "fuel"),
        (2, Limits(), "trap"),
    ],
)
def test_a_failed_call_sends_nothing_it_published(
    runtime: Runtime, mode: int, limits: Limits, kind: str
) -> None:
    """publisher.wat publishes and reports its health, then fails: neither goes out."""
    imports, got = recording()
    publisher = runtime.instantiate(
        FIXTURES / "publisher.wat", limits=limits, imports=imports, name="p"
    )
    for _ in range(2):
        with pytest.raises(WasmError) as failed:
            publisher.call("t", packb(mode))
        assert failed.value.kind == kind
    assert got == []
    # A call that succeeds sends them, in order, once it has returned.
    assert unpackb(publisher.call("t", packb(0))) is None
    assert got == [("publish", "publisher.out", None), ("health", "degraded", "about to fail")]


# A deadline far enough away for a loaded machine: these tests are about other limits.
_ROOMY = 60_000


def forged(mode: int, a: bytes, b: bytes) -> bytes:
    """forger.wat's message: it publishes ``b`` on ``a`` (mode 0), or reports kind ``a``,
    reason ``b`` (mode 1)."""
    return packb(a + b + struct.pack("<III", mode, len(a), len(b)))


def test_a_publish_on_the_nodes_own_topics_fails_the_call(runtime: Runtime) -> None:
    imports, got = recording()
    forger = runtime.instantiate(
        FIXTURES / "forger.wat", limits=Limits(deadline_ms=_ROOMY), imports=imports, name="f"
    )
    lie = packb({"kind": "failing", "agent": "someone-else"})
    for topic in ("symbiont.health", "symbiont.remediation", "symbiont.dead_letter", "symbiont."):
        with pytest.raises(WasmError) as refused:
            forger.call("t", forged(0, topic.encode(), lie))
        assert str(refused.value) == (
            f"abi: f cannot publish on {topic!r}: topics starting with 'symbiont.' are "
            "published by Symbiont itself, not by modules (report health with the health "
            "import)"
        )
    assert got == []
    forger.call("t", forged(0, b"symbiontic.out", packb(1)))
    assert got == [("publish", "symbiontic.out", 1)]


def test_a_health_reason_is_cut_at_what_a_report_holds(runtime: Runtime) -> None:
    imports, got = recording()
    forger = runtime.instantiate(
        FIXTURES / "forger.wat", limits=Limits(deadline_ms=_ROOMY), imports=imports, name="f"
    )
    forger.call("t", forged(1, b"degraded", "é".encode() * 5_000_000))  # 10 MB
    forger.call("t", forged(1, b"healthy", b"fine"))
    [(_, kind, reason), short] = got
    assert kind == "degraded" and reason.endswith(" [truncated]")
    assert len(reason.encode()) <= HEALTH_REASON_BYTES and set(reason[:-12]) == {"é"}
    assert short == ("health", "healthy", "fine")


def test_publishes_per_call_are_bounded(runtime: Runtime) -> None:
    imports, got = recording()
    flood = runtime.instantiate(
        FIXTURES / "publisher.wat",
        limits=Limits(publishes=50, deadline_ms=_ROOMY),
        imports=imports,
        name="flood",
    )
    with pytest.raises(WasmError) as limited:
        flood.call("t", packb(3))  # publishes until refused
    assert str(limited.value) == (
        "limit: flood made more than 50 publishes in one call (limit: publishes)"
    )
    assert got == []
    with pytest.raises(WasmError) as default:
        runtime.instantiate(
            FIXTURES / "publisher.wat", limits=Limits(deadline_ms=_ROOMY), name="flood"
        ).call("t", packb(3))
    assert "more than 1000 publishes" in str(default.value)

    small = runtime.instantiate(
        FIXTURES / "publisher.wat", limits=Limits(publish_bytes=20), imports=imports, name="s"
    )
    with pytest.raises(WasmError) as too_big:  # 14 bytes of publish, then 21 of health
        small.call("t", packb(0))
    assert str(too_big.value) == (
        "limit: s published more than 20 bytes in one call (limit: publish_bytes)"
    )
    assert got == []


def test_log_lines_per_call_are_bounded(runtime: Runtime) -> None:
    imports, got = recording()
    chatty = runtime.instantiate(
        FIXTURES / "publisher.wat",
        limits=Limits(deadline_ms=_ROOMY),
        imports=imports,
        name="chatty",
    )
    chatty.call("t", packb(4))  # 5,000 log lines
    assert got[:-1] == [("log", 1, "about to fail")] * 1000
    assert got[-1] == (
        "log",
        2,
        "chatty: 4000 more log lines dropped (at most 1000 per call)",
    )


def test_stdout_without_the_grant_fails_the_call(runtime: Runtime) -> None:
    """fd_write to stdout or stderr without the stdout grant is a capability error, as any
    ungranted capability; it used to report 5 bytes written to nowhere."""
    denied = runtime.instantiate(FIXTURES / "stdout.wat", name="quiet")
    for fd, stream in ((1, "stdout"), (2, "stderr")):
        with pytest.raises(WasmError) as refused:
            denied.call("t", packb(fd))
        assert str(refused.value) == (
            f"capability: quiet called wasi_snapshot_preview1.fd_write on fd {fd} ({stream}), "
            "but the capability 'stdout' was not granted "
            "(grant it in the manifest: grants: ['stdout'])"
        )
    assert unpackb(denied.call("t", packb(3))) == 8  # EBADF: no other fd is open

    imports, got = recording()
    granted = runtime.instantiate(
        FIXTURES / "stdout.wat",
        limits=Limits(grants=frozenset({"stdout"})),
        imports=imports,
        name="loud",
    )
    assert unpackb(granted.call("t", packb(1))) == 0  # errno 0: written
    assert unpackb(granted.call("t", packb(2))) == 0
    assert unpackb(granted.call("t", packb(3))) == 8
    assert got == [("stdout", b"hello"), ("stdout", b"hello")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"table_elements": 0}, "table_elements: expected a positive integer"),
        ({"instances": -1}, "instances: expected a positive integer"),
        ({"tables": 1.5}, "tables: expected a positive integer"),
        ({"memories": True}, "memories: expected a positive integer"),
        ({"publishes": None}, "publishes: expected a positive integer"),
        ({"publish_bytes": 2**63}, "publish_bytes: expected a positive integer up to 2\\*\\*63"),
    ],
)
def test_the_new_limits_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limits(**kwargs)
    assert Limits.from_config({"table_elements": 5, "publishes": 2}) == Limits(
        table_elements=5, publishes=2
    )


def test_one_log_line_or_stdout_write_is_bounded(runtime: Runtime) -> None:
    """A log line is cut at LOG_LINE_BYTES; an fd_write takes at most as many bytes (a
    partial write, as POSIX allows) and at most IOV_MAX (1024) iovecs."""
    wat = f"""(module
      (import "symbiont" "log" (func $log (param i32 i32 i32)))
      (import "wasi_snapshot_preview1" "fd_write"
        (func $fd_write (param i32 i32 i32 i32) (result i32)))
      {_ABI}
      (func (export "symbiont_handle") (param i32 i32) (result i64)
        ;; 60,000 zeros from 2048, as a log line and as one iovec (at 0) of fd_write;
        ;; the count written goes to 516, the errno to 520
        (call $log (i32.const 1) (i32.const 2048) (i32.const 60000))
        (i32.store (i32.const 0) (i32.const 2048))
        (i32.store (i32.const 4) (i32.const 60000))
        (i32.store (i32.const 520) (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1)
          (i32.const 516)))
        (i32.store (i32.const 524) (call $fd_write (i32.const 1) (i32.const 0)
          (i32.const 1025) (i32.const 528)))
        ;; the reply: a fixarray of 3: [written, errno, errno of 1025 iovecs] as uint32s
        (i32.store8 (i32.const 600) (i32.const 0x93))
        (i32.store8 (i32.const 601) (i32.const 0xce))
        (i32.store (i32.const 602) (call $bswap (i32.load (i32.const 516))))
        (i32.store8 (i32.const 606) (i32.const 0xce))
        (i32.store (i32.const 607) (call $bswap (i32.load (i32.const 520))))
        (i32.store8 (i32.const 611) (i32.const 0xce))
        (i32.store (i32.const 612) (call $bswap (i32.load (i32.const 524))))
        (i64.or (i64.shl (i64.const 600) (i64.const 32)) (i64.const 16)))
      (func $bswap (param $x i32) (result i32)
        (i32.or
          (i32.or (i32.shl (local.get $x) (i32.const 24))
                  (i32.shl (i32.and (local.get $x) (i32.const 0xff00)) (i32.const 8)))
          (i32.or (i32.and (i32.shr_u (local.get $x) (i32.const 8)) (i32.const 0xff00))
                  (i32.shr_u (local.get $x) (i32.const 24))))))"""
    imports, got = recording()
    loud = runtime.instantiate(
        wat.encode(), limits=Limits(grants=frozenset({"stdout"})), imports=imports, name="l"
    )
    written, errno, too_many = unpackb(loud.call("t", packb(None)))
    assert (written, errno, too_many) == (LOG_LINE_BYTES, 0, 28)  # EINVAL
    [log, stdout] = got
    assert log[:2] == ("log", 1) and log[2] == "\0" * LOG_LINE_BYTES + " [truncated]"
    assert stdout[0] == "stdout" and len(stdout[1]) == LOG_LINE_BYTES


def _peak_rss_since(run: Callable[[], object]) -> int:
    """The most memory (RSS) the process had while ``run`` ran, over what it had before."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM, the peak
    before = _rss_bytes()
    run()
    with open("/proc/self/status") as status:
        [peak] = [int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")]
    return peak - before


def test_a_published_payload_is_checked_without_being_built(runtime: Runtime) -> None:
    """8 MB of empty maps: decoded to check it, it took the host ~600 MB and a second or
    more, past any deadline. Its structure is walked instead; the bytes go out as they are."""
    wat = """(module (import "symbiont" "publish" (func $publish (param i32 i32 i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "big")
      (func (export "symbiont_abi_version") (result i32) (i32.const 1))
      (func (export "symbiont_alloc") (param $n i32) (result i32)
        (local $pages i32)
        (local.set $pages (i32.shr_u (i32.add (local.get $n) (i32.const 66559)) (i32.const 16)))
        (if (i32.gt_u (local.get $pages) (memory.size))
          (then (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size)))
                            (i32.const -1))
                  (then (return (i32.const 0))))))
        (i32.const 1024))
      ;; publishes the payload of [topic, payload], topic "t" (2 bytes)
      (func (export "symbiont_handle") (param $ptr i32) (param $len i32) (result i64)
        (call $publish (i32.const 0) (i32.const 3) (i32.add (local.get $ptr) (i32.const 3))
          (i32.sub (local.get $len) (i32.const 3)))
        (i64.const 0)))"""
    got: list[int] = []
    relay = runtime.instantiate(
        wat.encode(),
        limits=Limits(deadline_ms=_ROOMY),
        imports=Imports(publish=lambda topic, payload: got.append(len(payload))),
        name="relay",
    )
    n = 8 * 1024 * 1024
    payload = b"\xdd" + n.to_bytes(4, "big") + b"\x80" * n
    assert _peak_rss_since(lambda: relay.call("t", payload)) < 100 * 1024 * 1024
    assert got == [len(payload)]
    with pytest.raises(WasmError, match="publish payload is not one msgpack value: 1 bytes after"):
        relay.call("t", b"\xc0\xc0")


def test_a_module_cannot_sleep_past_its_deadline(runtime: Runtime) -> None:
    """WASI's poll_oneoff (C's sleep()) blocks in the host, where the deadline does not
    reach: a 3 s sleep ran 3 s past a 100 ms deadline. No grant allows it."""
    wat = f"""(module
      (import "wasi_snapshot_preview1" "poll_oneoff"
        (func $poll (param i32 i32 i32 i32) (result i32)))
      {_ABI}
      (func (export "symbiont_handle") (param i32 i32) (result i64)
        ;; one subscription at 0: a relative timeout of 3 s on the monotonic clock
        (i32.store8 (i32.const 8) (i32.const 0))
        (i32.store (i32.const 16) (i32.const 1))
        (i64.store (i32.const 24) (i64.const 3000000000))
        (drop (call $poll (i32.const 0) (i32.const 256) (i32.const 1) (i32.const 512)))
        (i64.const 0)))"""
    for grants in (frozenset(), GRANTS):
        sleepy = runtime.instantiate(wat.encode(), limits=Limits(grants=grants), name="sleepy")
        with pytest.raises(WasmError) as refused:
            sleepy.call("t", packb(None))
        assert str(refused.value) == (
            "capability: sleepy called wasi_snapshot_preview1.poll_oneoff, which no grant "
            "allows: it waits (sleep, poll), and a call may not wait past its deadline"
        )
