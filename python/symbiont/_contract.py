"""What the BEAM and Python must agree on, read from ``contract.json`` beside this file.

The same file is read by the BEAM when it compiles (``Symbiont.Contract``): health kinds,
actions, the agent-name rule, the Wasm sandbox's limits, the keys of the conductor's
snapshot. ``python/tests/test_contract.py`` and ``test/symbiont/contract_test.exs`` check
each side against it, so drift between the two languages is a test failure.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any, TypedDict

_CONTRACT: dict[str, Any] = json.loads(
    resources.files("symbiont").joinpath("contract.json").read_text(encoding="utf-8")
)

#: Every health kind an event on ``symbiont.health`` may have.
HEALTH_KINDS: tuple[str, ...] = tuple(_CONTRACT["health"]["kinds"])
#: The health kinds an agent may report of itself (``self.health``, the Wasm import).
AGENT_HEALTH_KINDS: tuple[str, ...] = tuple(_CONTRACT["health"]["agent_kinds"])
#: The health kinds of a running agent, the worst first.
HEALTH_WORST_FIRST: tuple[str, ...] = tuple(_CONTRACT["health"]["worst_first"])
#: What an agent's own health report may hold (PROTOCOL.md §8.3).
HEALTH_REPORT: dict[str, int] = dict(_CONTRACT["health"]["report"])
#: Every action a remediation event may name.
REMEDIATION_ACTIONS: frozenset[str] = frozenset(_CONTRACT["actions"]["remediation"])
#: The actions a conductor's policy may return.
POLICY_ACTIONS: frozenset[str] = frozenset(_CONTRACT["actions"]["policy"])
#: The rule an agent's name follows (the whole name).
AGENT_NAME = re.compile(_CONTRACT["names"]["agent"])
#: The prefix of the topics only Symbiont publishes on.
RESERVED_TOPIC_PREFIX: str = _CONTRACT["names"]["reserved_topic_prefix"]
#: The Wasm sandbox's integer limits and their defaults (``None``: no default), in the
#: order docs/WASM_ABI.md §5 lists them.
WASM_LIMITS: dict[str, int | None] = {
    name: default for name, default in _CONTRACT["wasm"]["limits"]
}
#: The largest value a Wasm limit may have (wasmtime takes them as signed 64-bit).
WASM_MAX_LIMIT: int = _CONTRACT["wasm"]["max_limit"]
#: The WASI capabilities a Wasm agent may be granted.
WASM_GRANTS: frozenset[str] = frozenset(_CONTRACT["wasm"]["grants"])
#: The keys of the conductor's snapshot.
SNAPSHOT_KEYS: tuple[str, ...] = tuple(_CONTRACT["snapshot"]["keys"])
#: The keys of each agent's map in the snapshot, as the BEAM builds it ...
SNAPSHOT_AGENT_KEYS: tuple[str, ...] = tuple(_CONTRACT["snapshot"]["agent_keys"])
#: ... and those :func:`symbiont.conductor.decide` adds before the policy sees it.
SNAPSHOT_AGENT_KEYS_ADDED: tuple[str, ...] = tuple(
    _CONTRACT["snapshot"]["agent_keys_added_in_python"]
)


class AgentSnapshot(TypedDict):
    """One agent of the conductor's snapshot, as a policy gets it (docs/ANALYTICS.md)."""

    name: str
    replicas: int
    managed: bool
    min_replicas: int
    max_replicas: int
    required: bool
    version: str | None
    queue: int
    in_flight: int
    handled: int
    failed: int
    crashes: int
    restarts: int
    handled_delta: int
    failed_delta: int
    crashes_delta: int
    restarts_delta: int
    failure_rate: float | None
    idle_ms: int
    quarantined: bool
    suspect: dict[str, Any] | None
    last_error: Any
    journal_error: str | None
    start_failures: int
    health: str
    health_reason: str | None
    canary: dict[str, Any] | None
    pins: dict[str, Any]
    promoted_ago_ms: int | None
    remedied_ago_ms: int | None
    signals: dict[str, Any]
    ladder: dict[str, Any] | None
    # Added in Python (symbiont.conductor.decide).
    deployed: bool
    p99_us: int | None
    high_water: int | None


class Snapshot(TypedDict):
    """The conductor's snapshot, as a policy's ``decide`` gets it."""

    tick: int
    now_ms: int
    node: str
    agents: list[AgentSnapshot]
    topology: dict[str, Any]
    hosts: list[dict[str, Any]]
    templates: dict[str, dict[str, Any]]
    health: list[dict[str, Any]]
    remediations: list[dict[str, Any]]
