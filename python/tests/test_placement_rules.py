"""The noisy-neighbour rule, unit-tested on hand-made snapshots (the scenario on real
hosts is in test/symbiont/noisy_neighbour_test.exs)."""

from __future__ import annotations

from typing import Any

import pytest

from symbiont._placement_rules import NoisyNeighbour
from symbiont.conductor import DefaultPolicy


def agent(name: str, *, p99_ms: float | None = 1.0, **fields: Any) -> dict[str, Any]:
    base = {
        "name": name,
        "replicas": 1,
        "managed": True,
        "min_replicas": 1,
        "max_replicas": 1,
        "required": True,
        "version": f"wasm:/priv/{name}.wat",
        "queue": 0,
        "high_water": 30,
        "in_flight": 0,
        "handled_delta": 5,
        "failed_delta": 0,
        "crashes_delta": 0,
        "restarts_delta": 0,
        "p99_us": None if p99_ms is None else int(p99_ms * 1000),
        "pins": {},
        "idle_ms": 0,
        "quarantined": False,
        "suspect": None,
        "health": "healthy",
        "promoted_ago_ms": None,
    }
    return base | fields


def host(name: str, utilisation: float, agents: int, **shares: float) -> dict[str, Any]:
    return {
        "name": name,
        "agents": agents,
        "utilisation": utilisation,
        "window_ms": 5000,
        "shares": [
            {"id": a, "name": a.split("#")[0], "role": "stable", "share": s, "busy_ms": 1}
            for a, s in shares.items()
        ],
    }


# The noisy scene: "slow" takes 95% of wasm#1, 97% busy; "fast" waits 2 s behind it.
def scene(**over: Any) -> dict[str, Any]:
    agents = over.pop("agents", [agent("slow", p99_ms=70), agent("fast", p99_ms=2_000)])
    hosts = over.pop("hosts", [host("wasm#1", 0.97, 2, slow=0.95, fast=0.05)])
    return {"now_ms": 10_000, "agents": agents, "hosts": hosts, "topology": {"edges": []}} | over


def test_a_noisy_neighbour_is_rerouted_after_ticks_in_a_row_with_its_evidence() -> None:
    rule = NoisyNeighbour(ticks=2)
    assert rule.decide(scene()) == []
    [action] = rule.decide(scene())
    assert action["action"] == "reroute" and action["agent"] == "slow" and action["id"] == "slow"
    assert action["evidence"] == {
        "host": "wasm#1",
        "utilisation": 0.97,
        "share": 0.95,
        "window_ms": 5000,
        "co_tenants_p99_ms": {"fast": 2000.0},
        "ticks": 2,
    }
    assert "takes 95% of host wasm#1 (97% busy)" in action["reason"]
    # Evidence afresh after a proposal: not again at the next tick.
    assert rule.decide(scene()) == []


def test_a_reroute_that_did_not_happen_is_not_proposed_again_before_settle_ms() -> None:
    # Refused or failed: the replica is still noisy in its shared host, tick after tick.
    rule = NoisyNeighbour(ticks=1, settle_ms=5_000)
    assert len(rule.decide(scene(now_ms=10_000))) == 1
    for now in range(10_200, 15_000, 200):
        assert rule.decide(scene(now_ms=now)) == [], now
    assert len(rule.decide(scene(now_ms=15_000))) == 1
    # Another noisy replica is not held back by it.
    hosts = [host("wasm#2", 0.97, 2, other=0.95, fast=0.05)]
    agents = [agent("other", p99_ms=70), agent("fast", p99_ms=2_000)]
    assert rule.decide(scene(now_ms=15_200, hosts=hosts, agents=agents))[0]["id"] == "other"


def test_a_tick_without_the_evidence_starts_the_count_again() -> None:
    rule = NoisyNeighbour(ticks=2)
    calm = scene(agents=[agent("slow", p99_ms=70), agent("fast", p99_ms=2)])
    assert rule.decide(scene()) == []
    assert rule.decide(calm) == []
    assert rule.decide(scene()) == []
    assert len(rule.decide(scene())) == 1


@pytest.mark.parametrize(
    ("why", "over"),
    [
        ("the host is not busy", {"hosts": [host("wasm#1", 0.6, 2, slow=0.95, fast=0.05)]}),
        ("its share is not too big", {"hosts": [host("wasm#1", 0.97, 2, slow=0.5, fast=0.5)]}),
        ("its co-tenants do not wait", {"agents": [agent("slow"), agent("fast", p99_ms=3)]}),
        ("no co-tenant took any time", {"hosts": [host("wasm#1", 0.97, 3, slow=1.0)]}),
        ("alone in its host (rerouted already)", {"hosts": [host("slow", 1.0, 1, slow=1.0)]}),
        ("a Python agent", {"agents": [agent("slow", version="m:C"), agent("fast", p99_ms=2_000)]}),
        ("pinned", {"agents": [agent("slow", pins={"replicas": {}}), agent("fast", p99_ms=2_000)]}),
        ("quarantined", {"agents": [agent("slow", quarantined=True), agent("fast", p99_ms=2_000)]}),
        ("not in scope", {"agents": [agent("fast", p99_ms=2_000)]}),
    ],
)
def test_no_reroute_when(why: str, over: dict[str, Any]) -> None:
    rule = NoisyNeighbour(ticks=1)
    assert rule.decide(scene(**over)) == [], why


def test_a_canary_is_the_deploys() -> None:
    hosts = [host("wasm#1", 0.97, 2, slow=0.95, fast=0.05)]
    hosts[0]["shares"][0]["role"] = "canary"
    assert NoisyNeighbour(ticks=1).decide(scene(hosts=hosts)) == []


def test_each_replica_is_judged_in_its_host() -> None:
    hosts = [
        host("wasm#1", 0.99, 2, **{"slow#2": 0.9, "fast": 0.1}),
        host("wasm#2", 0.2, 2, slow=0.9, other=0.1),
    ]
    agents = [agent("slow"), agent("fast", p99_ms=900), agent("other", p99_ms=900)]
    [action] = NoisyNeighbour(ticks=1).decide(scene(hosts=hosts, agents=agents))
    assert action["id"] == "slow#2" and action["evidence"]["host"] == "wasm#1"


def test_thresholds_are_parameters_checked_at_construction() -> None:
    rule = NoisyNeighbour(share=0.3, utilisation=0.5, co_tenant_p99_ms=1000, ticks=1)
    hosts = [host("wasm#1", 0.6, 2, slow=0.4, fast=0.6)]
    assert rule.decide(scene(hosts=hosts))[0]["agent"] == "slow"
    assert rule.decide(scene(hosts=hosts, agents=[agent("slow"), agent("fast", p99_ms=999)])) == []
    for bad in (
        {"share": 1.5},
        {"utilisation": "high"},
        {"co_tenant_p99_ms": -1},
        {"ticks": 0},
        {"settle_ms": -1},
    ):
        with pytest.raises(ValueError, match="noisy_neighbour"):
            NoisyNeighbour(**bad)


def test_the_default_policy_reroutes_before_it_scales_and_takes_the_rule_options() -> None:
    policy = DefaultPolicy(noisy_neighbour={"ticks": 1}, grow_ticks=1)
    growing = [agent("slow", queue=5, max_replicas=3), agent("fast", p99_ms=2_000)]
    calm = [host("wasm#1", 0.5, 2, slow=0.95, fast=0.05)]
    assert policy.decide(scene(agents=[a | {"queue": 1} for a in growing], hosts=calm)) == []
    # Its queue grows too: one action a tick, the reroute first.
    [action] = policy.decide(scene(agents=[a | {"queue": 20} for a in growing]))
    assert action["action"] == "reroute" and action["agent"] == "slow"
    with pytest.raises(ValueError, match="noisy_neighbour ticks"):
        DefaultPolicy(noisy_neighbour={"ticks": 0})
