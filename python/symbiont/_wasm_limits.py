"""The sandbox's limits and the error of a Wasm call.

:mod:`symbiont.wasm` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _contract

if TYPE_CHECKING:  # pragma: no cover - typing only
    pass

#: The capabilities a manifest may grant to a Wasm agent (all are off by default).
GRANTS = _contract.WASM_GRANTS


class WasmError(Exception):
    """A call into a Wasm module failed; the host keeps serving.

    ``kind`` is one of ``"load"``, ``"abi"``, ``"trap"``, ``"deadline"``, ``"fuel"``,
    ``"memory"``, ``"limit"``, ``"capability"`` or, from a component, ``"error"`` (the
    agent's code raised).
    """

    # Its public home (symbiont.wasm): the name tracebacks and error types on the wire give.
    __module__ = "symbiont.wasm"

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"


def _limit_default(name: str) -> int:
    """The contract's default for limit ``name`` (one that has a default)."""
    value = _contract.WASM_LIMITS[name]
    assert value is not None, name
    return value


@dataclass(frozen=True)
class Limits:
    """The sandbox of one instance.

    deadline_ms:
        Wall-clock budget of one call (one message: its allocation, the handler and
        ``symbiont_state``); past it the call is interrupted (epoch interruption), within
        a tick of the runtime (5 ms by default).
    fuel:
        If set, the number of wasm instructions (roughly) one call may execute.
    memory_bytes:
        The most bytes one linear memory of the instance may have.
    table_elements:
        The most elements one table of the instance may have (8 bytes each in the host).
    instances, tables, memories:
        The most module instances, tables and linear memories the instance's store may
        create. A Symbiont module is one instance with one memory, and at most one table
        (C, Rust: the indirect-call table); multi-memory modules need ``memories`` raised.
    publishes:
        The most events (``publish`` and ``health`` imports) one call may make.
    publish_bytes:
        The most bytes (topics and payloads, kinds and reasons) those events may carry.
    grants:
        WASI capabilities: any of :data:`GRANTS`.

    A refused ``memory.grow`` or ``table.grow`` returns -1 to the module, as Wasm says; the
    caps keep any one grow small enough to end well within a deadline (a single
    instruction is not interrupted).
    """

    # The defaults are the contract's (symbiont._contract, Symbiont.Contract).
    deadline_ms: int = _limit_default("deadline_ms")
    fuel: int | None = _contract.WASM_LIMITS["fuel"]
    memory_bytes: int = _limit_default("memory_bytes")
    table_elements: int = _limit_default("table_elements")
    instances: int = _limit_default("instances")
    tables: int = _limit_default("tables")
    memories: int = _limit_default("memories")
    publishes: int = _limit_default("publishes")
    publish_bytes: int = _limit_default("publish_bytes")
    grants: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for name in _INT_LIMITS:
            if name != "fuel":
                _positive_int(name, getattr(self, name))
        if self.fuel is not None:
            _positive_int("fuel", self.fuel)
        grants = frozenset(self.grants)
        unknown = sorted(grants - GRANTS)
        if unknown:
            raise ValueError(
                f"grants: {', '.join(map(repr, unknown))} is not a capability "
                f"(allowed: {', '.join(sorted(GRANTS))})"
            )
        object.__setattr__(self, "grants", grants)

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> Limits:
        """Limits from a manifest map (keys as the fields; ``grants`` a list)."""
        config = dict(config or {})
        unknown = sorted(set(config) - {*_INT_LIMITS, "grants"})
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} is not a Wasm limit (allowed: {', '.join(_INT_LIMITS)}, grants)"
            )
        if "grants" in config:
            grants = config["grants"]
            if not isinstance(grants, (list, tuple, set, frozenset)):
                raise ValueError(f"grants: expected a list of capabilities, got {grants!r}")
            config["grants"] = frozenset(grants)
        return cls(**config)


# The integer limits, in the order the docs list them (all but fuel have a default).
_INT_LIMITS = tuple(_contract.WASM_LIMITS)

_MAX_LIMIT = _contract.WASM_MAX_LIMIT  # wasmtime takes the limits as signed 64-bit integers


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_LIMIT:
        raise ValueError(f"{name}: expected a positive integer up to 2**63 - 1, got {value!r}")


# Its public home (symbiont.wasm): the name tracebacks and reprs give (set after
# @dataclass, which looks its module up while it builds the class).
Limits.__module__ = "symbiont.wasm"
