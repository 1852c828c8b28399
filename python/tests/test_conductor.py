"""The default policy, unit-tested on hand-made snapshots (the scenario tests on real
hosts are in test/symbiont/conductor_test.exs)."""

from __future__ import annotations

from typing import Any

import pytest

from symbiont import conductor
from symbiont.conductor import DefaultPolicy


def agent(name: str, **fields: Any) -> dict[str, Any]:
    base = {
        "name": name,
        "replicas": 1,
        "managed": True,
        "min_replicas": 1,
        "max_replicas": 4,
        "required": True,
        "queue": 0,
        "high_water": 30,
        "in_flight": 0,
        "handled_delta": 5,
        "failed_delta": 0,
        "crashes_delta": 0,
        "restarts_delta": 0,
        "pins": {},
        "idle_ms": 0,
        "quarantined": False,
        "suspect": None,
        "health": None,
        "deployed": False,
        "promoted_ago_ms": None,
    }
    return base | fields


def pin(*fields: str) -> dict[str, Any]:
    """Pins on ``fields``, as the snapshot has them."""
    pin = {"value": 1, "by": "operator", "reason": "by hand", "until_ms": None}
    return dict.fromkeys(fields, pin)


def snapshot(*agents: dict[str, Any], edges: list[tuple[str, str]] = (), **extra: Any) -> dict:
    return {
        "now_ms": 10_000,
        "agents": list(agents),
        "topology": {"edges": [{"from": f, "topic": "t", "to": t} for f, t in edges]},
        **extra,
    }


def test_a_healthy_system_needs_nothing() -> None:
    assert DefaultPolicy().decide(snapshot(agent("a"), agent("b"))) == []


def crashes(n: int, deliveries: int | None = None, uptime_ms: int = 50) -> dict[str, Any]:
    """The signals of an agent with ``n`` crashes (since its last remedy, in the BEAM's
    window of uptime) on ``deliveries`` different deliveries (default: each its own)."""
    c = {"n": n, "deliveries": n if deliveries is None else deliveries, "uptime_ms": uptime_ms}
    return {"signals": {"crashes": c | {"last_ago_ms": 100}}}


def test_one_delivery_failing_again_and_again_is_poison_not_a_crash_loop() -> None:
    suspect = {"id": "a", "topic": "t", "attempts": 3}
    policy = DefaultPolicy()
    actions = policy.decide(snapshot(agent("a", suspect=suspect, **crashes(3, deliveries=1))))
    assert [(x["action"], x["agent"]) for x in actions] == [("dead_letter", "a")]


def test_many_crashes_are_a_crash_loop_rolled_back_when_a_deploy_can_be_undone() -> None:
    policy = DefaultPolicy(crash_loop=3)
    [action] = policy.decide(snapshot(agent("a", **crashes(4))))
    assert action["action"] == "quarantine"
    assert action["evidence"]["ladder"] == {
        "pattern": "crash_loop",
        "rung": 2,
        "rungs": ["rollback", "quarantine"],
    }
    policy = DefaultPolicy(crash_loop=3)
    [action] = policy.decide(snapshot(agent("a", deployed=True, **crashes(4))))
    assert (action["action"], action["evidence"]["ladder"]["rung"]) == ("rollback", 1)


def test_a_crash_loop_climbs_its_ladder_once_the_rollback_had_its_settle_time() -> None:
    policy = DefaultPolicy(crash_loop=3, settle_ms=5_000)
    # Rolled back 1 s ago: still crashing (the BEAM counts crashes after the rollback
    # only), but the remedy settles.
    after = {"deployed": False, "ladder": {"crash_loop": {"rung": 1, "ago_ms": 1_000}}}
    assert policy.decide(snapshot(agent("a", **after, **crashes(3)))) == []
    after["ladder"]["crash_loop"]["ago_ms"] = 6_000
    [action] = policy.decide(snapshot(agent("a", **after, **crashes(3))))
    assert (action["action"], action["evidence"]["ladder"]["rung"]) == ("quarantine", 2)


def test_restarts_are_not_crashes() -> None:
    """Restarted because a neighbour crashed the host it shares, upgraded or restarted by
    hand: restarts, never crash-loop evidence (only crashes charged to the agent are)."""
    policy = DefaultPolicy(crash_loop=2)
    for now in range(0, 2_000, 200):
        restarted = agent("bystander", restarts_delta=3, crashes_delta=0)
        assert policy.decide(snapshot(restarted, now_ms=now)) == []


def test_a_cascade_is_answered_at_its_root_only() -> None:
    failing = {"failed_delta": 9, "handled_delta": 0}
    snap = snapshot(
        agent("a", **failing),
        agent("b", **failing),
        agent("c", **failing),
        agent("d"),
        edges=[("a", "b"), ("b", "c"), ("d", "c")],
    )
    actions = DefaultPolicy().decide(snap)
    assert [(x["action"], x["agent"]) for x in actions] == [("restart", "a")]
    assert sorted(actions[0]["evidence"]["downstream"]) == ["b", "c"]


def test_an_agent_failing_on_its_journal_is_not_restarted_nor_are_its_symptoms() -> None:
    journal = "the journal /data/a.log cannot be written: no space left on device (enospc)"
    snap = snapshot(
        agent("a", health="failing", journal_error=journal),
        agent("b", failed_delta=9, handled_delta=0),
        edges=[("a", "b")],
    )
    assert DefaultPolicy().decide(snap) == []


def test_an_agent_failing_to_start_is_left_to_its_own_rule_nor_are_its_symptoms() -> None:
    snap = snapshot(
        agent("a", health="failing", start_failures=2, handled_delta=0),
        agent("b", failed_delta=9, handled_delta=0),
        edges=[("a", "b")],
    )
    assert DefaultPolicy().decide(snap) == []
    # Once it started, a failing agent is a root again.
    snap["agents"][0]["start_failures"] = 0
    assert [(x["action"], x["agent"]) for x in DefaultPolicy().decide(snap)] == [("restart", "a")]


def test_downstream_of_a_root_just_acted_on_is_left_to_settle() -> None:
    failing = {"failed_delta": 9, "handled_delta": 0}
    acted = [{"by": "conductor", "result": "applied", "agent": "a", "at_ms": 9_000}]
    snap = snapshot(agent("a"), agent("b", **failing), edges=[("a", "b")], remediations=acted)
    assert DefaultPolicy(settle_ms=5_000).decide(snap) == []


def queue(arrival: float, service_us: float | None, **fields: Any) -> dict[str, Any]:
    """An agent's queue signals: ``arrival`` events/s, each taking ``service_us``."""
    q = {"arrival_per_s": arrival, "service_us": service_us, "high_water": 30}
    return {"signals": {"queue": q}, **fields}


def test_a_slow_consumer_is_scaled_to_what_littles_law_says_in_one_step() -> None:
    # 50 events/s of 50 ms each: 2.5 replicas busy, 4 at 80% (plus what waits: 20/10 s).
    policy = DefaultPolicy(grow_ticks=2, drain_ticks=2)
    assert policy.decide(snapshot(agent("a", **queue(50, 50_000, queue=10)))) == []
    [action] = policy.decide(snapshot(agent("a", **queue(50, 50_000, queue=20))))
    assert (action["action"], action["replicas"]) == ("scale", 4)
    assert action["evidence"]["needed"] == 4
    assert action["reason"].startswith("capacity: 50.0 events/s")
    # At 4, between 50% and 80% busy: it stays, tick after tick (hysteresis).
    for _ in range(10):
        assert policy.decide(snapshot(agent("a", replicas=4, **queue(50, 50_000)))) == []
    # The load halves: 2.5 / 0.5 -> 3 at most 50% busy, once nothing waits for 2 ticks.
    assert policy.decide(snapshot(agent("a", replicas=4, **queue(25, 50_000)))) == []
    [action] = policy.decide(snapshot(agent("a", replicas=4, **queue(25, 50_000))))
    assert (action["action"], action["replicas"]) == ("scale", 3)


def test_scaling_stays_within_bounds_and_waits_for_a_steady_need() -> None:
    policy = DefaultPolicy(grow_ticks=2)
    # A burst of one tick is not a need.
    assert policy.decide(snapshot(agent("a", **queue(500, 50_000)))) == []
    assert policy.decide(snapshot(agent("a", **queue(1, 50_000)))) == []
    assert policy.decide(snapshot(agent("a", **queue(1, 50_000)))) == []
    policy = DefaultPolicy(grow_ticks=1)
    [action] = policy.decide(snapshot(agent("a", **queue(500, 50_000))))
    assert action["replicas"] == 4  # max_replicas
    assert (
        DefaultPolicy(grow_ticks=1).decide(
            snapshot(agent("a", **queue(500, 50_000), max_replicas=1))
        )
        == []
    )


def test_without_a_handling_time_a_growing_queue_adds_one_replica() -> None:
    policy = DefaultPolicy(grow_ticks=2)
    for q in (5, 12):
        assert policy.decide(snapshot(agent("a", queue=q, **queue(10, None)))) == []
    [action] = policy.decide(snapshot(agent("a", queue=20, **queue(10, None))))
    assert (action["action"], action["replicas"]) == ("scale", 2)
    assert action["reason"].startswith("queue growing")


def test_the_bottleneck_of_a_chain_is_scaled_first() -> None:
    # a feeds b; both short of replicas: a, the most upstream, first.
    policy = DefaultPolicy(grow_ticks=1)
    snap = snapshot(
        agent("a", **queue(50, 50_000)), agent("b", **queue(40, 50_000)), edges=[("a", "b")]
    )
    [action] = policy.decide(snap)
    assert (action["agent"], action["evidence"]["downstream"]) == ("a", ["b"])


def test_idle_agents_go_down_to_their_minimum_then_away_when_not_required() -> None:
    policy = DefaultPolicy(idle_ms=100, drain_ticks=99)
    [scale] = policy.decide(snapshot(agent("a", idle_ms=500, replicas=2)))
    assert (scale["action"], scale["replicas"]) == ("scale", 1)
    assert DefaultPolicy(idle_ms=100).decide(snapshot(agent("a", idle_ms=500))) == []
    [retire] = DefaultPolicy(idle_ms=100).decide(snapshot(agent("b", idle_ms=500, required=False)))
    assert retire["action"] == "retire"


def test_a_new_tenant_topic_gets_an_agent_from_its_template_once() -> None:
    templates = {"tenant": {"match": "tenant.*.orders", "python": "shop:Tenant", "wasm": None}}

    def tick(policy: DefaultPolicy, published: int, subscribers: int, *agents: Any) -> list:
        topics = [
            {"topic": "tenant.acme.orders", "published": published, "subscribers": subscribers},
            {"topic": "tenant.acme.eu.orders", "published": 9, "subscribers": 0},
        ]
        snap = snapshot(*agents, templates=templates)
        snap["topology"]["topics"] = topics
        return policy.decide(snap)

    policy = DefaultPolicy()
    [spawn] = tick(policy, 3, 0)
    assert spawn["action"] == "spawn" and spawn["agent"] == "tenant-acme"
    assert spawn["template"] == "tenant"
    assert spawn["config"] == {"topic": "tenant.acme.orders", "tenant": "acme"}
    # Nothing new published (a retired tenant's old count), served, or already there: none.
    assert tick(policy, 3, 0) == []
    assert tick(policy, 5, 1) == []
    assert tick(policy, 7, 0, agent("tenant-acme")) == []
    assert conductor._wildcard("a.*.c.*", "a.b.c.d") == "b-d"
    assert conductor._wildcard("a.*", "a.") is None


def test_decide_builds_the_named_policy_once_and_checks_its_answer() -> None:
    assert conductor.decide("symbiont.conductor:DefaultPolicy", {}, snapshot()) == []
    with pytest.raises(ValueError, match='expected the policy as "module:Class"'):
        conductor.decide("nocolon", {}, snapshot())


def test_decide_adds_what_the_beam_leaves_out() -> None:
    # The BEAM's map of an agent has no "deployed" (32 keys at most): it is whether a
    # promoted version can be rolled back, promoted_ago_ms not None; nor "p99_us" and
    # "high_water", which are in its signals.
    crashing = {k: v for k, v in agent("a", **crashes(4)).items() if k != "deployed"}
    promoted = crashing | {"promoted_ago_ms": 5_000}
    options = {"crash_loop": 3}
    answer = conductor.decide("symbiont.conductor:DefaultPolicy", options, snapshot(promoted))
    assert [(x["action"], x["agent"]) for x in answer] == [("rollback", "a")]
    options = {"crash_loop": 3, "settle_ms": 9}
    answer = conductor.decide("symbiont.conductor:DefaultPolicy", options, snapshot(crashing))
    assert [(x["action"], x["agent"]) for x in answer] == [("quarantine", "a")]
    signals = {"p99_us": 1234, "queue": {"high_water": 30}}
    snap = snapshot({"name": "b", "quarantined": True, "signals": signals})
    conductor.decide("symbiont.conductor:DefaultPolicy", {}, snap)
    assert (snap["agents"][0]["p99_us"], snap["agents"][0]["high_water"]) == (1234, 30)


def test_a_pinned_replica_count_is_left_alone_and_evidence_counts_from_the_unpin() -> None:
    # Idle for ages at 1 replica; the operator scales to 3 (pinned).
    policy = DefaultPolicy(drain_ticks=3)
    for now in range(0, 62 * 200, 200):
        policy.decide(snapshot(agent("a", **queue(0, 1_000)), now_ms=now))
    pinned = {"replicas": 3, "pins": pin("replicas")}
    for now in range(20_000, 30_000, 200):
        assert policy.decide(snapshot(agent("a", **pinned, **queue(0, 1_000)), now_ms=now)) == []
    # The pin lifted: spare ticks are counted from now, not from before the scale.
    for now in (30_000, 30_200):
        assert policy.decide(snapshot(agent("a", replicas=3, **queue(0, 1_000)), now_ms=now)) == []
    [action] = policy.decide(snapshot(agent("a", replicas=3, **queue(0, 1_000)), now_ms=30_400))
    assert (action["action"], action["replicas"]) == ("scale", 1)


def test_a_scale_restarts_the_count_of_spare_ticks() -> None:
    policy = DefaultPolicy(drain_ticks=3)
    for now in range(0, 2_000, 200):
        policy.decide(snapshot(agent("a", **queue(0, 1_000)), now_ms=now))
    # Scaled to 3 (no pin: the hold expired, or the conductor did it).
    for now in (2_000, 2_200):
        assert policy.decide(snapshot(agent("a", replicas=3, **queue(0, 1_000)), now_ms=now)) == []
    assert policy.decide(snapshot(agent("a", replicas=3, **queue(0, 1_000)), now_ms=2_400))


def test_pinned_quarantine_and_version_are_left_alone() -> None:
    crashing = crashes(5)
    # Released by hand: the crash loop rule does not quarantine it again.
    policy = DefaultPolicy(crash_loop=3)
    assert policy.decide(snapshot(agent("a", **crashing, pins=pin("quarantine")))) == []
    # Rolled back by hand: no rollback, a quarantine instead.
    policy = DefaultPolicy(crash_loop=3)
    [action] = policy.decide(snapshot(agent("a", **crashing, deployed=True, pins=pin("version"))))
    assert action["action"] == "quarantine"
    # Errors right after a deploy whose version is pinned: a restart, not a rollback.
    failing = {"failed_delta": 9, "handled_delta": 0, "deployed": True, "promoted_ago_ms": 10}
    [action] = DefaultPolicy().decide(snapshot(agent("a", **failing, pins=pin("version"))))
    assert action["action"] == "restart"
    # Idle, its count pinned: neither scaled in nor retired.
    idle = {"idle_ms": 10**9, "replicas": 2, "required": False, "pins": pin("replicas")}
    assert DefaultPolicy(idle_ms=100).decide(snapshot(agent("a", **idle))) == []


def test_a_failing_agent_that_crashes_is_not_restarted_on_top() -> None:
    # Failing because its host dies under its deliveries: it restarts by itself.
    failing = {"health": "failing", "failed_delta": 2, "handled_delta": 0}
    policy = DefaultPolicy(crash_loop=3)
    assert policy.decide(snapshot(agent("a", **crashes(2), **failing))) == []
    # Without crashes, a failing root is restarted.
    [action] = DefaultPolicy().decide(snapshot(agent("a", **failing)))
    assert (action["action"], action["reason"]) == ("restart", "failing")
    # One crash long ago (past settle_ms) does not keep it off its ladder for as long as
    # the crash stays in the BEAM's window of uptime.
    old = crashes(1)
    old["signals"]["crashes"]["last_ago_ms"] = 20_000
    [action] = DefaultPolicy(settle_ms=5_000).decide(snapshot(agent("a", **old, **failing)))
    assert (action["action"], action["reason"]) == ("restart", "failing")


def slow(k: int, n: int, p: float, own: bool = True) -> dict[str, Any]:
    """Latency evidence from the BEAM: ``k`` of ``n`` recent handling times above the bar,
    ``p`` how likely that is if nothing changed."""
    base = {"n": 100, "p50_us": 500, "p99_us": 1_000, "version": "v1", "own": own}
    e = {"n": n, "k": k, "p": p, "bar_us": 6_000, "test": "tail", "baseline": base}
    return e | {"p50_us": 40_000, "p99_us": 45_000}


def test_a_latency_regression_after_a_promotion_is_rolled_back_from_few_samples() -> None:
    # 3 of 3 samples above the bar: p = 1e-6, no fixed sample count needed.
    promoted = {"deployed": True, "promoted_ago_ms": 600_000}
    snap = snapshot(agent("a", **promoted, signals={"latency": slow(3, 3, 1e-6, own=False)}))
    [action] = DefaultPolicy().decide(snap)
    assert action["action"] == "rollback"
    assert action["reason"].startswith("latency regression since its deploy: 3 of 3")
    assert action["evidence"]["ladder"] == {
        "pattern": "regression",
        "rung": 1,
        "rungs": ["rollback"],
    }
    # Evidence that is weak (could be chance) is no regression.
    snap = snapshot(agent("a", **promoted, signals={"latency": slow(3, 100, 0.3)}))
    assert DefaultPolicy().decide(snap) == []


def test_slower_than_its_own_history_with_nothing_to_undo_is_restarted_once() -> None:
    policy = DefaultPolicy(settle_ms=1_000)
    signals = {"signals": {"latency": slow(5, 5, 1e-8)}}
    [action] = policy.decide(snapshot(agent("a", **signals)))
    assert (action["action"], action["evidence"]["ladder"]["pattern"]) == ("restart", "latency")
    # Still slow after the restart settled: its ladder is at its top, nothing more.
    after = {"ladder": {"latency": {"rung": 1, "ago_ms": 5_000}}}
    for _ in range(5):
        assert policy.decide(snapshot(agent("a", **signals, **after))) == []


def test_slow_has_hysteresis() -> None:
    # Under alpha to become slow, over alpha_exit to stop being so.
    policy = DefaultPolicy(alpha=1e-3, alpha_exit=1e-2)
    assert policy._is_slow("a", slow(3, 3, 1e-4))
    assert policy._is_slow("a", slow(3, 10, 5e-3))  # between: still slow
    assert not policy._is_slow("a", slow(3, 20, 5e-2))
    assert not policy._is_slow("a", slow(3, 10, 5e-3))  # between: still fine


def leaking(rss_mb: int = 300, bps: float = 5e6, r2: float = 0.99) -> dict[str, Any]:
    memory = {"rss_bytes": rss_mb << 20, "growth_bps": bps, "r2": r2, "readings": 10}
    return {"signals": {"memory": memory | {"grown_bytes": 1 << 26, "span_ms": 9_000}}}


def test_a_leak_is_restarted_then_quarantined_when_it_grows_again() -> None:
    policy = DefaultPolicy(settle_ms=5_000)
    [action] = policy.decide(snapshot(agent("a", **leaking())))
    assert (action["action"], action["evidence"]["ladder"]["rung"]) == ("restart", 1)
    assert action["reason"].startswith("memory leak")
    # It grows again once the restart settled: quarantine, the top of its ladder.
    after = {"ladder": {"leak": {"rung": 1, "ago_ms": 6_000}}}
    [action] = policy.decide(snapshot(agent("a", **leaking(), **after)))
    assert (action["action"], action["evidence"]["ladder"]["rung"]) == ("quarantine", 2)


def test_no_leak_without_steady_growth_above_the_floor_nor_in_a_wasm_agent() -> None:
    policy = DefaultPolicy()
    assert policy.decide(snapshot(agent("a", **leaking(rss_mb=100)))) == []  # below the floor
    assert policy.decide(snapshot(agent("a", **leaking(r2=0.3)))) == []  # a sawtooth
    assert policy.decide(snapshot(agent("a", **leaking(bps=1e5)))) == []  # slow growth
    wasm = agent("a", version="wasm:priv/wasm/counter.wat", **leaking())
    assert policy.decide(snapshot(wasm)) == []


def test_a_failing_agent_climbs_its_ladder_and_is_never_restarted_for_ever() -> None:
    failing = {"health": "failing", "failed_delta": 30, "handled_delta": 0}
    policy = DefaultPolicy(settle_ms=5_000)
    [action] = policy.decide(snapshot(agent("a", **failing)))
    assert (action["action"], action["evidence"]["ladder"]["rung"]) == ("restart", 1)
    # The restart did not help; a promoted version exists: rollback.
    at = {"ladder": {"failing": {"rung": 1, "ago_ms": 6_000}}}
    [action] = policy.decide(snapshot(agent("a", deployed=True, **failing, **at)))
    assert (action["action"], action["evidence"]["ladder"]["rung"]) == ("rollback", 2)
    # None: quarantine.
    [action] = policy.decide(snapshot(agent("a", **failing, **at)))
    assert (action["action"], action["evidence"]["ladder"]["rung"]) == ("quarantine", 3)
    # Quarantined: nothing more, however long; released by hand and failing again past
    # the top, quarantined again (not restarted).
    at = {"ladder": {"failing": {"rung": 3, "ago_ms": 60_000}}}
    q = agent("a", **(failing | {"health": "quarantined"}), **at, quarantined=True)
    assert policy.decide(snapshot(q)) == []
    [action] = policy.decide(snapshot(agent("a", **failing, **at)))
    assert action["action"] == "quarantine"
    # A ladder untouched for ladder_reset_ms starts from the bottom again.
    at = {"ladder": {"failing": {"rung": 3, "ago_ms": 700_000}}}
    [action] = DefaultPolicy(ladder_reset_ms=600_000).decide(snapshot(agent("a", **failing, **at)))
    assert action["action"] == "restart"


def test_a_rule_is_added_or_removed_with_one_line() -> None:
    def everyone_restarts(tick: conductor.Tick):
        for a in tick.agents.values():
            yield {"action": "restart", "agent": a["name"], "reason": "mine"}

    policy = DefaultPolicy()
    policy.rules.append(everyone_restarts)
    assert [x["reason"] for x in policy.decide(snapshot(agent("a")))] == ["mine"]
    policy = DefaultPolicy()
    policy.rules.remove(policy.leak)
    assert policy.decide(snapshot(agent("a", **leaking()))) == []


def test_errors_roll_back_only_against_the_version_before() -> None:
    failing = {"health": "failing", "failed_delta": 9, "handled_delta": 0, "deployed": True}
    failing |= {"promoted_ago_ms": 600_000}

    def failures(baseline: dict[str, Any] | None) -> dict[str, Any]:
        e = {"n": 20, "k": 20, "p": 1e-30, "baseline_rate": 0.0, "baseline": baseline}
        return {"signals": {"failures": e}}

    before = {"n": 100, "p50_us": 1, "p99_us": 2, "version": "v1", "own": False}
    [action] = DefaultPolicy().decide(snapshot(agent("a", **failing, **failures(before))))
    assert (action["action"], action["evidence"]["ladder"]["pattern"]) == ("rollback", "regression")
    # Worse than its own history, or with no history at all: its failing ladder, whose
    # first rung is a restart.
    for baseline in (before | {"own": True}, None):
        [action] = DefaultPolicy().decide(snapshot(agent("a", **failing, **failures(baseline))))
        assert (action["action"], action["evidence"]["ladder"]["pattern"]) == ("restart", "failing")


def test_a_ladder_starts_over_only_once_its_pattern_went_away() -> None:
    # Slow for ever: restarted once, then never again, however long (its ladder's top
    # is a restart, and the pattern never went away).
    policy = DefaultPolicy(settle_ms=1_000, ladder_reset_ms=10_000)
    signals = {"signals": {"latency": slow(5, 5, 1e-8)}}
    [action] = policy.decide(snapshot(agent("a", **signals), now_ms=0))
    assert action["action"] == "restart"
    for now in range(200, 60_000, 200):
        at = {"ladder": {"latency": {"rung": 1, "ago_ms": now}}}
        assert policy.decide(snapshot(agent("a", **signals, **at), now_ms=now)) == []
    # Fast for a while, then slow again: a new incident, its ladder from the bottom.
    for now in range(60_000, 62_000, 200):
        at = {"ladder": {"latency": {"rung": 1, "ago_ms": now}}}
        assert policy.decide(snapshot(agent("a", **at), now_ms=now)) == []
    at = {"ladder": {"latency": {"rung": 1, "ago_ms": 62_000}}}
    [action] = policy.decide(snapshot(agent("a", **signals, **at), now_ms=62_000))
    assert action["action"] == "restart"


def test_an_option_that_was_removed_or_never_was_says_so() -> None:
    with pytest.raises(TypeError, match="'window_ticks': removed: crashes are counted"):
        DefaultPolicy(window_ticks=10)
    with pytest.raises(TypeError, match="'crash_lop': no such option"):
        DefaultPolicy(crash_lop=3)


def test_an_agent_slow_behind_a_busier_co_tenant_is_not_restarted() -> None:
    # Most of its events slow against its own history: alone, a restart; in a shared host
    # where another agent takes most of the time, it waits behind that one (no restart).
    slow_own = {"signals": {"latency": slow(62, 100, 1e-90)}}
    [alone] = DefaultPolicy().decide(snapshot(agent("a", **slow_own)))
    assert alone["action"] == "restart"
    shares = [
        {"id": "hog", "name": "hog", "role": "stable", "share": 0.9, "busy_ms": 900},
        {"id": "a", "name": "a", "role": "stable", "share": 0.1, "busy_ms": 100},
    ]
    hosts = [
        {"name": "wasm#1", "agents": 2, "utilisation": 0.95, "window_ms": 5000, "shares": shares}
    ]
    assert DefaultPolicy().decide(snapshot(agent("a", **slow_own), hosts=hosts)) == []


def test_a_burst_of_slow_events_is_no_reason_to_restart() -> None:
    # 6 of its last 100 events slow (its host just restarted, or a neighbour hung it):
    # evidence enough that something happened (p = 5e-4), but a restart would not help.
    burst = {"signals": {"latency": slow(6, 100, 5e-4)}}
    assert DefaultPolicy().decide(snapshot(agent("a", **burst))) == []
    # After a promotion, the same evidence against the version before rolls it back.
    promoted = {"deployed": True, "promoted_ago_ms": 600_000}
    [action] = DefaultPolicy().decide(snapshot(agent("a", **burst, **promoted)))
    assert action["action"] == "rollback"
