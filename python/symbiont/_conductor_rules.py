"""The rules of :class:`symbiont.conductor.DefaultPolicy`, and the history they keep
between ticks: what each rule proposes and why (docs/ANALYTICS.md), in the order the
policy tries them. Functions of ``DefaultPolicy``, which binds them as its methods, so
that a subclass may override or call each one as ``self.poison(tick)``; the small action
and snapshot helpers they share with :class:`symbiont.conductor.Tick` come first.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from . import _analytics as analytics
from . import _contract
from ._contract import AgentSnapshot

if TYPE_CHECKING:  # pragma: no cover
    from .conductor import DefaultPolicy, Tick

__all__ = [
    "_action",
    "_failing_set",
    "_is_slow",
    "_or_inf",
    "_pins",
    "_rate",
    "_remember",
    "_scalable",
    "_signals",
    "_symptom",
    "_watched",
    "_wildcard",
    "capacity",
    "crash_loop_rule",
    "evolution",
    "failing",
    "idle",
    "leak",
    "noisy",
    "poison",
    "regression",
]


_NAME = _contract.AGENT_NAME


def _wildcard(pattern: str, topic: str) -> str | None:
    """The segments of ``topic`` that the ``*`` of ``pattern`` stand for, joined by ``-``;
    ``None`` when it does not match (``*`` is one non-empty dot-separated segment)."""
    want, have = pattern.split("."), topic.split(".")
    if len(want) != len(have):
        return None
    parts = []
    for w, h in zip(want, have, strict=True):
        if w == "*" and h:
            parts.append(h)
        elif w != h:
            return None
    return "-".join(parts) if parts else None


def _action(action: str, agent: str, reason: str, **fields: Any) -> dict[str, Any]:
    return {"action": action, "agent": agent, "reason": reason, **fields}


def _signals(a: AgentSnapshot) -> dict[str, Any]:
    return a.get("signals") or {}


def _pins(a: AgentSnapshot) -> set[str]:
    return set(a.get("pins") or {})


def _or_inf(ms: int | None) -> float:
    return math.inf if ms is None else ms


def _watched(self: DefaultPolicy, tick: Tick) -> Iterator[AgentSnapshot]:
    """The agents a rule looks at: not quarantined, without an action this tick."""
    acted = tick.acted
    for a in tick.agents.values():
        if not a["quarantined"] and a["name"] not in acted:
            yield a


def crash_loop_rule(self: DefaultPolicy, tick: Tick) -> Iterator[dict[str, Any]]:
    """**Crash loop**: ``crash_loop`` crashes charged to it since its last remedy,
    within the BEAM's window of uptime, on more than one delivery (the crashes one
    delivery causes are a poison message's) -> its ladder."""
    for a in self._watched(tick):
        crashes = _signals(a).get("crashes") or {}
        n = crashes.get("n", 0)
        if n >= self.crash_loop and crashes.get("deliveries", 0) >= 2:
            evidence = {
                "crashes_in_window": n,
                "deliveries": crashes.get("deliveries"),
                "uptime_ms": crashes.get("uptime_ms"),
                "last_error": a.get("last_error"),
            }
            reason = (
                f"crash loop: {n} crashes on {crashes.get('deliveries')} deliveries "
                f"in {crashes.get('uptime_ms')} ms of uptime"
            )
            action = tick.climb(a, "crash_loop", reason, evidence)
            if action:
                yield action


def poison(self: DefaultPolicy, tick: Tick) -> Iterator[dict[str, Any]]:
    """**Poison message**: a delivery that already failed ``poison_after`` times ->
    ``dead_letter`` (the agent keeps going)."""
    for a in self._watched(tick):
        suspect = a.get("suspect") or {}
        attempts = suspect.get("attempts", 0)
        if attempts >= self.poison_after:
            yield _action(
                "dead_letter",
                a["name"],
                f"poison message on {suspect.get('topic')}: failed {attempts} times",
                evidence={"suspect": suspect},
            )


def regression(self: DefaultPolicy, tick: Tick) -> Iterator[dict[str, Any]]:
    """**Regression**: worse since a promotion that can be undone -> ``rollback``;
    slower than its own history with nothing to undo -> ``restart``, once."""
    failing = self._failing_set(tick)
    for a in self._watched(tick):
        name = a["name"]
        signals = _signals(a)
        latency: dict[str, Any] = signals.get("latency") or {}
        slow = self._is_slow(name, latency or None)
        failures: dict[str, Any] = signals.get("failures") or {}
        # Failures compared with the baseline of the version it replaced (none: no
        # comparison).
        against_before = bool(failures) and (failures.get("baseline") or {}).get("own") is False
        errors = (
            name in failing
            and not self._symptom(tick, name, failing)
            and not a.get("journal_error")
            and not a.get("start_failures")
            and (
                _or_inf(a.get("promoted_ago_ms")) < self.regression_ms
                or (against_before and analytics.regressed(failures, self.alpha))
            )
        )
        deployed = a.get("deployed") and "version" not in _pins(a)
        if deployed and (slow or errors):
            evidence: dict[str, Any]
            if slow:
                evidence = {"latency": latency}
                reason = (
                    f"latency regression since its deploy: {latency['k']} of "
                    f"{latency['n']} handled above {latency['bar_us']} µs "
                    f"(p = {latency['p']:.1e})"
                )
            else:
                evidence = {"failed_delta": a.get("failed_delta"), "failures": failures or None}
                reason = "errors right after a deploy"
            action = tick.climb(a, "regression", reason, evidence)
            if action:
                yield action
        elif (
            slow and latency["k"] >= self.latency_share * latency["n"] and name not in tick.crowded
        ):
            # Slower than its own history, nothing to undo: a restart helps only a
            # process that is slow as a whole (most of its events), not a burst of a
            # few slow ones (a restart of its host), nor one that waits behind a busier
            # co-tenant of its host (the noisy neighbour rule's): they pass.
            reason = (
                f"latency regression: {latency['k']} of {latency['n']} handled above "
                f"{latency['bar_us']} µs (p = {latency['p']:.1e})"
            )
            action = tick.climb(a, "latency", reason, {"latency": latency})
            if action:
                yield action


def failing(self: DefaultPolicy, tick: Tick) -> Iterator[dict[str, Any]]:
    """**Failing** (a cascade answered at its roots) -> its ladder."""
    failing = self._failing_set(tick)
    if not failing:
        return
    for name in sorted(failing - tick.acted):
        a = tick.agents[name]
        if self._symptom(tick, name, failing):
            continue  # a symptom: its root gets (or just got) the action
        if a.get("journal_error"):
            continue  # its disk, not its code: it recovers when the disk does
        if a.get("start_failures"):
            continue  # it retries its start itself, then quarantines itself
        crashes = _signals(a).get("crashes") or {}
        if crashes.get("n") and _or_inf(crashes.get("last_ago_ms")) < self.settle_ms:
            continue  # restarted by its crashes already: the crash loop rule answers
        downstream = analytics.roots(failing, tick.upstream).get(name, [])
        reason = "root of a cascading failure" if downstream else "failing"
        evidence = {
            "failed_delta": a.get("failed_delta"),
            "health": a.get("health"),
            "downstream": downstream,
        }
        action = tick.climb(a, "failing", reason, evidence)
        if action:
            yield action


def leak(self: DefaultPolicy, tick: Tick) -> Iterator[dict[str, Any]]:
    """**Leak**: its host's memory grows steadily above a floor -> its ladder."""
    for a in self._watched(tick):
        if str(a.get("version", "")).startswith("wasm:"):
            continue
        memory = _signals(a).get("memory")
        if analytics.leaking(
            memory,
            min_bps=self.leak_bps,
            floor_bytes=self.leak_floor,
            min_readings=self.leak_readings,
            min_r2=self.leak_r2,
        ):
            assert memory is not None
            reason = (
                f"memory leak: its host grows {memory['growth_bps'] / 1e6:.1f} MB/s "
                f"to {memory['rss_bytes'] / 1e6:.0f} MB"
            )
            action = tick.climb(a, "leak", reason, {"memory": memory})
            if action:
                yield action


def noisy(self: DefaultPolicy, tick: Tick) -> Iterator[dict[str, Any]]:
    """**Noisy neighbour** (:class:`~symbiont._placement_rules.NoisyNeighbour`): a Wasm
    replica hogging its shared host while a co-tenant suffers -> ``reroute`` it to a
    host of its own."""
    yield from self.noisy_neighbour.decide(tick.snapshot)


def capacity(self: DefaultPolicy, tick: Tick) -> Iterator[dict[str, Any]]:
    """**Capacity** (Little's law), scaling out at the bottleneck first."""
    short: dict[str, tuple[int, dict[str, Any]]] = {}
    for a in self._scalable(tick):
        name = a["name"]
        arrival, service = self._rate(name)
        queue = a.get("queue", 0)
        if service is None and arrival == 0 and queue == 0:
            service = 0.0  # nothing arrives: no replica is needed, whatever each takes
        if service is None:
            # No event finished in its window: Little's law has no service time. A
            # queue growing tick after tick still says it does not keep up.
            queues = self._queues.get(name, [])
            growing = len(queues) > self.grow_ticks and all(
                x < y for x, y in pairwise(queues[-self.grow_ticks - 1 :])
            )
            high = (_signals(a).get("queue") or {}).get("high_water") or a.get("high_water")
            if growing and queue * 3 > (high or 0) and a["replicas"] < a["max_replicas"]:
                grow: dict[str, Any] = {"queues": queues[-5:], "service_us": None}
                short[name] = (a["replicas"] + 1, grow)
            continue
        # What this tick's arrivals need, at the target utilisation (with what waits,
        # drained within drain_s) and at the low one; steady for some ticks first.
        need = analytics.replicas_needed(arrival + queue / self.drain_s, service, self.utilisation)
        low = max(
            analytics.replicas_needed(arrival, service, self.low_utilisation),
            a["min_replicas"],
        )
        needs = self._needs.setdefault(name, [])
        needs.append((need, low, queue))
        del needs[: -max(self.grow_ticks, self.drain_ticks)]
        evidence: dict[str, Any] = {
            "arrival_per_s": round(arrival, 2),
            "service_us": round(service),
            "queue": queue,
            "utilisation": self.utilisation,
        }
        out = needs[-self.grow_ticks :]
        spare = needs[-self.drain_ticks :]
        n = a["replicas"]
        if len(out) == self.grow_ticks and all(x > n for x, _, _ in out):
            if n < a["max_replicas"]:
                need = min(x for x, _, _ in out)
                short[name] = (min(need, a["max_replicas"]), evidence | {"needed": need})
        elif len(spare) == self.drain_ticks and all(y < n and q == 0 for _, y, q in spare):
            low = max(y for _, y, _ in spare)
            yield _action(
                "scale",
                name,
                f"capacity: {arrival:.1f} events/s x {service / 1000:.1f} ms need "
                f"{low} at {self.low_utilisation:.0%} busy (it has {n})",
                replicas=low,
                evidence=evidence | {"needed": low, "utilisation": self.low_utilisation},
            )
    # The bottleneck first: an agent fed by another one short of replicas waits for it.
    # A noisy neighbour gets a host of its own first (:meth:`noisy`), then what it
    # still needs.
    for name in short.keys() & self.noisy_neighbour.pending:
        del short[name]
    for name, downstream in analytics.roots(set(short), tick.upstream).items():
        n, evidence = short[name]
        a = tick.agents[name]
        if evidence.get("service_us") is None:
            reason = f"queue growing: {evidence['queues'][-self.grow_ticks - 1 :]}"
        else:
            reason = (
                f"capacity: {evidence['arrival_per_s']:.1f} events/s (and "
                f"{evidence['queue']} waiting) x {evidence['service_us'] / 1000:.1f} ms "
                f"need {evidence['needed']} replicas at {self.utilisation:.0%} busy"
            )
        yield _action(
            "scale",
            name,
            reason,
            replicas=n,
            evidence={**evidence, "replicas": a["replicas"], "downstream": downstream},
        )


def idle(self: DefaultPolicy, tick: Tick) -> Iterator[dict[str, Any]]:
    """**Idle**: nothing for ``idle_ms`` -> scale in, then retire if not required."""
    for a in self._scalable(tick):
        if a["idle_ms"] < self.idle_ms:
            continue
        if a["replicas"] > a["min_replicas"]:
            yield _action(
                "scale",
                a["name"],
                f"idle for {a['idle_ms']} ms",
                replicas=a["replicas"] - 1,
                evidence={"idle_ms": a["idle_ms"]},
            )
        elif not a["required"]:
            yield _action(
                "retire",
                a["name"],
                f"idle for {a['idle_ms']} ms",
                evidence={"idle_ms": a["idle_ms"]},
            )


def evolution(self: DefaultPolicy, tick: Tick) -> Iterator[dict[str, Any]]:
    """**Evolution**: spawn an agent for a topic a template matches, new and served by
    nobody."""
    snapshot, agents = tick.snapshot, tick.agents
    topics = snapshot.get("topology", {}).get("topics", [])
    before, self._published = self._published, {t["topic"]: t["published"] for t in topics}
    for template, spec in sorted(snapshot.get("templates", {}).items()):
        pattern = spec.get("match")
        if not isinstance(pattern, str):
            continue
        for t in topics:
            tenant = _wildcard(pattern, t["topic"])
            name = f"{template}-{tenant}"
            fresh = t["published"] > before.get(t["topic"], 0)
            if tenant is None or t["subscribers"] or not fresh or name in agents:
                continue
            if not _NAME.fullmatch(name):
                continue  # not a valid agent name: no agent for it
            yield _action(
                "spawn",
                name,
                f"{t['topic']} is published to and served by nobody: one {template} agent for it",
                template=template,
                config={"topic": t["topic"], "tenant": tenant},
                evidence={"topic": t["topic"], "published": t["published"]},
            )


def _remember(self: DefaultPolicy, tick: Tick) -> None:
    for name, a in tick.agents.items():
        # A scale (by hand, or by the conductor) or a pin on the count: the queue's
        # history is what follows, once the conductor may act on it again.
        replicas = a.get("replicas", 0)
        changed = self._replicas.get(name, replicas) != replicas
        self._replicas[name] = replicas
        if changed or "replicas" in _pins(a):
            for memory in (self._queues, self._rates, self._needs):
                memory.pop(name, None)
            if not changed:
                continue
        queues = self._queues.setdefault(name, [])
        queues.append(a.get("queue", 0))
        del queues[:-10]
        q = _signals(a).get("queue") or {}
        if q.get("arrival_per_s") is not None:
            rates = self._rates.setdefault(name, [])
            rates.append((q["arrival_per_s"], q.get("service_us")))
            del rates[: -(self.grow_ticks + 1)]
    for gone in set(self._replicas) - set(tick.agents):
        memories: tuple[dict[str, Any], ...] = (
            self._replicas,
            self._queues,
            self._rates,
            self._needs,
        )
        for memory in memories:
            memory.pop(gone, None)
        self._slow.discard(gone)
    for key in [k for k in self._present if k[0] not in tick.agents]:
        del self._present[key]


def _rate(self: DefaultPolicy, name: str) -> tuple[float, float | None]:
    """Its arrival rate at the last tick (events/s), and its handling time (µs): the
    mean over the last ticks where an event finished."""
    rates = self._rates.get(name, [])
    if not rates:
        return 0.0, None
    services = [s for _, s in rates if s is not None]
    return rates[-1][0], (sum(services) / len(services) if services else None)


def _is_slow(self: DefaultPolicy, name: str, latency: dict[str, Any] | None) -> bool:
    """Whether its latency evidence says slower: under ``alpha`` to become so, over
    ``alpha_exit`` to stop (hysteresis)."""
    limit = self.alpha_exit if name in self._slow else self.alpha
    if analytics.regressed(latency, limit):
        self._slow.add(name)
        return True
    self._slow.discard(name)
    return False


def _scalable(self: DefaultPolicy, tick: Tick) -> Iterator[AgentSnapshot]:
    """The agents the scaling rules look at: managed, not pinned on their count."""
    for a in self._watched(tick):
        if a.get("managed") and "replicas" not in _pins(a):
            yield a


def _failing_set(self: DefaultPolicy, tick: Tick) -> set[str]:
    return {n for n, a in tick.agents.items() if self._failing(a)}


def _symptom(self: DefaultPolicy, tick: Tick, name: str, failing: set[str]) -> bool:
    """Whether ``name`` fails downstream of a failing agent, or of one the conductor
    just acted on (it settles)."""
    return bool(analytics.ancestors(name, tick.upstream) & (failing | tick.settling))
