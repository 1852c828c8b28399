"""The Python side of the contract between the languages (``symbiont/contract.json``);
test/symbiont/contract_test.exs checks the BEAM's side against the same file."""

from __future__ import annotations

import re
import typing
from dataclasses import fields
from importlib import resources
from pathlib import Path

from symbiont import _agent, _contract, conductor
from symbiont._contract import AgentSnapshot, Snapshot

PACKAGE = Path(_contract.__file__).parent


def test_the_contract_ships_inside_the_package() -> None:
    """Read as an installed package reads it (importlib.resources), not from the repo."""
    text = resources.files("symbiont").joinpath("contract.json").read_text(encoding="utf-8")
    assert '"health"' in text


def test_health_kinds_and_actions_come_from_the_contract() -> None:
    assert set(_contract.AGENT_HEALTH_KINDS) <= set(_contract.HEALTH_KINDS)
    assert set(_contract.HEALTH_WORST_FIRST) <= set(_contract.HEALTH_KINDS)
    assert _agent._HEALTH_KINDS == _contract.AGENT_HEALTH_KINDS
    assert _agent.RESERVED_PREFIX == _contract.RESERVED_TOPIC_PREFIX
    assert _agent.HEALTH_REASON_BYTES == _contract.HEALTH_REPORT["reason_bytes"]
    assert conductor.ACTIONS == _contract.POLICY_ACTIONS
    assert _contract.POLICY_ACTIONS <= _contract.REMEDIATION_ACTIONS


def test_the_agent_name_rule() -> None:
    assert _contract.AGENT_NAME.fullmatch("billing-2.v1_x")
    for bad in ["", "a b", "x" * 65, "é", "a/b"]:
        assert not _contract.AGENT_NAME.fullmatch(bad), bad


def test_wasm_limits_defaults_are_the_contracts() -> None:
    wasm = __import__("pytest").importorskip("symbiont.wasm")
    limits = wasm.Limits()
    names = [f.name for f in fields(limits) if f.name != "grants"]
    assert names == list(_contract.WASM_LIMITS)
    for name, default in _contract.WASM_LIMITS.items():
        assert getattr(limits, name) == default, name
    assert wasm.GRANTS == _contract.WASM_GRANTS
    assert wasm.HEALTH_KINDS == frozenset(_contract.AGENT_HEALTH_KINDS)


def test_the_snapshot_typeddicts_have_the_contracts_keys() -> None:
    agent_keys = set(typing.get_type_hints(AgentSnapshot))
    assert agent_keys == set(_contract.SNAPSHOT_AGENT_KEYS) | set(
        _contract.SNAPSHOT_AGENT_KEYS_ADDED
    )
    assert set(typing.get_type_hints(Snapshot)) == set(_contract.SNAPSHOT_KEYS)


# An agent's map is read through these names in the policy modules: a[...], a.get(...).
_READ = re.compile(r"\b(?:a|agent|stable|other_agent)(?:\.get\(|\[)\"(\w+)\"")


def test_the_policy_reads_no_key_the_snapshot_lacks() -> None:
    """The drift the contract is there for: a rule reading a key no snapshot has (as
    conductor.py once read ``desired_base``) is always ``None`` and silently never fires."""
    known = set(_contract.SNAPSHOT_AGENT_KEYS) | set(_contract.SNAPSHOT_AGENT_KEYS_ADDED)
    read: dict[str, set[str]] = {}
    for module in ["conductor.py", "_placement_rules.py", "_analytics.py"]:
        for key in _READ.findall((PACKAGE / module).read_text(encoding="utf-8")):
            read.setdefault(key, set()).add(module)
    assert read, "the pattern no longer finds the policy's reads"
    assert {k: m for k, m in read.items() if k not in known} == {}
