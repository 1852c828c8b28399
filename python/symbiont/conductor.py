"""The conductor's policy: it looks at a snapshot of the system and decides what to do.

The BEAM side (``Symbiont.Conductor``) observes and acts; a policy only decides. On every
tick the conductor calls :func:`decide` in the policy's own host with a snapshot (a plain
dict, see :class:`DefaultPolicy` for its keys) and applies the actions it returns, each
a dict with ``action``, ``agent``, ``reason`` and, per action, ``replicas`` (``scale``),
``path`` (``deploy``) or ``id`` (``reroute``: the replica to move to a host of its own);
``evidence`` (a dict) is kept in the audit trail. The BEAM enforces the guardrails
(cooldowns, rate limits, replica bounds, the operator's pins), so a policy may propose
freely; the default policy proposes nothing on what the operator pinned.

A policy is any class with a ``decide(snapshot) -> list[dict]`` method, constructed with
the keyword options of the conductor's ``:policy_options``; name it in the config as
``"module:Class"``. One instance lives as long as its host, so it may keep history
between ticks (what must outlive its host, the rung each agent is at on each ladder, the
BEAM keeps and gives back in the snapshot).

:class:`DefaultPolicy` is a list of rules (:attr:`DefaultPolicy.rules`), each a function
of a :class:`Tick` that yields actions; the first action proposed for an agent in a tick
is its action. Its statistics come from the BEAM (``Symbiont.Signals``,
``Symbiont.Stats``) and are read by the small functions of :mod:`symbiont._analytics`;
docs/ANALYTICS.md says what each measures and why. To add a rule, subclass it (or wrap
it) and append yours::

    class Careful(DefaultPolicy):
        def __init__(self, **options):
            super().__init__(**options)
            self.rules.append(my_rules.noisy_neighbour)   # def noisy_neighbour(tick): ...
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise
from typing import Any, Protocol

from . import _analytics as analytics
from . import _contract
from ._contract import AgentSnapshot, Snapshot
from ._placement_rules import NoisyNeighbour

__all__ = ["ACTIONS", "DefaultPolicy", "Policy", "Rule", "Tick", "decide"]

#: The actions a policy may return.
ACTIONS = _contract.POLICY_ACTIONS


class Policy(Protocol):
    """What the conductor needs of a policy."""

    def decide(self, snapshot: Snapshot) -> list[dict[str, Any]]:
        """Return the actions to take for ``snapshot`` (possibly none)."""
        ...


_policies: dict[tuple[str, str], Policy] = {}


def decide(policy: str, options: dict[str, Any], snapshot: Snapshot) -> list[dict[str, Any]]:
    """Entry point called by the BEAM: the actions of ``policy`` for ``snapshot``.

    ``policy`` is ``"module:Class"``; the instance is built once per (policy, options)
    and kept, so that it can remember earlier ticks.
    """
    # What a policy can derive is left out of each agent's map on the BEAM (at most 32
    # keys there: a larger map costs ten times as much to build, 10,000 a tick), and
    # added here.
    for agent in snapshot.get("agents", []):
        agent.setdefault("deployed", agent.get("promoted_ago_ms") is not None)
        signals = agent.get("signals") or {}
        agent.setdefault("p99_us", signals.get("p99_us"))
        agent.setdefault("high_water", (signals.get("queue") or {}).get("high_water"))
    key = (policy, repr(sorted(options.items())))
    instance = _policies.get(key)
    if instance is None:
        module, _, name = policy.partition(":")
        if not module or not name:
            raise ValueError(f'expected the policy as "module:Class", got: {policy!r}')
        cls = getattr(importlib.import_module(module), name)
        instance = cls(**options)
        _policies[key] = instance
    actions = instance.decide(snapshot)
    if not isinstance(actions, list):
        raise TypeError(f"{policy}.decide must return a list of actions, got: {actions!r}")
    return actions


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


#: A rule: a function of the tick that yields the actions it proposes (each a dict as
#: :func:`_action` builds; see the module docstring). Rules are tried in order, and an
#: agent gets at most one action a tick: the first proposed for it.
Rule = Callable[["Tick"], Iterable[dict[str, Any]]]


@dataclass
class Tick:
    """What a rule sees: the snapshot, its agents by name, the policy (its options and
    memory), the actions proposed so far this tick, and helpers over the topology and the
    ladders."""

    snapshot: Snapshot
    policy: DefaultPolicy
    agents: dict[str, AgentSnapshot] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.agents = {a["name"]: a for a in self.snapshot.get("agents", [])}

    @property
    def now(self) -> int:
        """The snapshot's time (system ms)."""
        return int(self.snapshot.get("now_ms", 0))

    @property
    def acted(self) -> set[str]:
        """The agents that have an action this tick already."""
        return {action["agent"] for action in self.actions}

    @cached_property
    def upstream(self) -> dict[str, set[str]]:
        """For each agent, the agents that feed it (``snapshot["topology"]["edges"]``)."""
        return analytics.upstream_of(self.snapshot.get("topology", {}).get("edges", []))

    @cached_property
    def crowded(self) -> set[str]:
        """Agents that share a host with one that takes more of its time
        (``snapshot["hosts"]``): their handling times include waiting behind it."""
        out: set[str] = set()
        for host in self.snapshot.get("hosts", []):
            shares = host.get("shares", [])
            if len(shares) > 1:
                top = max(shares, key=lambda s: s.get("share", 0.0))
                out |= {s["name"] for s in shares if s["name"] != top["name"]}
        return out

    @cached_property
    def settling(self) -> set[str]:
        """Agents the conductor acted on within ``settle_ms``: their downstream settles."""
        return {
            r["agent"]
            for r in self.snapshot.get("remediations", [])
            if r.get("by") == "conductor"
            and r.get("result") == "applied"
            and isinstance(r.get("agent"), str)
            and self.now - r.get("at_ms", 0) < self.policy.settle_ms
        }

    def climb(
        self, a: AgentSnapshot, pattern: str, reason: str, evidence: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The next remedy on ``pattern``'s ladder for agent ``a``
        (:data:`symbiont._analytics.LADDERS`), as an action whose evidence records the
        ladder and the rung; ``None`` while the last remedy settles, or once nothing is
        left to try (see :func:`symbiont._analytics.next_rung`).

        A ladder starts again from the bottom ``ladder_reset_ms`` after its last rung only
        if the pattern went away meanwhile (for ``settle_ms`` or more): one that never
        did stays at its top, so that an agent slow for ever is not restarted every
        ``ladder_reset_ms`` for ever."""
        pinned = _pins(a)
        present = self.policy._present
        key = (a["name"], pattern)
        last = present.get(key)
        present[key] = self.now
        unbroken = last is not None and self.now - last <= self.policy.settle_ms

        def applies(remedy: str) -> bool:
            if remedy == "rollback":
                return bool(a.get("deployed")) and "version" not in pinned
            if remedy == "quarantine":
                return "quarantine" not in pinned
            return True

        step = analytics.next_rung(
            pattern,
            (a.get("ladder") or {}).get(pattern),
            applies,
            settle_ms=self.policy.settle_ms,
            reset_ms=math.inf if unbroken else self.policy.ladder_reset_ms,
            in_place=lambda remedy: remedy == "quarantine" and bool(a.get("quarantined")),
        )
        if step is None:
            return None
        remedy, rung = step
        rungs = list(analytics.LADDERS[pattern])
        ladder = {"pattern": pattern, "rung": rung, "rungs": rungs}
        return _action(remedy, a["name"], reason, evidence={**evidence, "ladder": ladder})


#: Options of DefaultPolicy before step 10, and what took their place.
_REMOVED = {
    "window_ticks": (
        "removed: crashes are counted over a window of uptime on the BEAM "
        "(config :symbiont, signals: [crash_window_ms: ...]), so that a crash loop whose "
        "restart backoff has grown to seconds is still one"
    ),
}


class DefaultPolicy:
    """Recognises the usual patterns of trouble, each answered by a ladder of remedies.

    Each agent in ``snapshot["agents"]`` (over its stable replicas; see
    ``Symbiont.Observation`` for what the words mean) has: ``name``, ``replicas`` (running
    count), ``managed`` (in the manifest: can be scaled), ``min_replicas``,
    ``max_replicas``, ``required``, ``version``, ``queue``, ``in_flight``, ``handled``,
    ``failed``, ``crashes`` (the deaths of its host charged to it: its code was running;
    being restarted because a neighbour crashed a shared host, an upgrade or a restart by
    hand is a restart, not a crash), ``restarts`` (it started again, for any reason),
    ``handled_delta``, ``failed_delta``, ``crashes_delta``, ``restarts_delta`` (since the
    last tick, or since the conductor started), ``failure_rate`` (over its last
    deliveries, or ``None``), ``idle_ms``, ``quarantined``, ``suspect`` (``{"id",
    "topic", "attempts"}`` of a delivery that failed before, or ``None``), ``health`` and
    ``health_reason`` (``healthy``, ``degraded``, ``overloaded``, ``failing`` or
    ``quarantined``: the worst of its replicas', its failure rate included), ``canary``
    (the version on trial beside it: its own ``health``, ``failed``, ``crashes``...; the
    deploy judges it, or ``None``), ``pins`` (what the operator set by hand, by field:
    ``replicas``, ``quarantine``, ``version``, each ``{"value", "by", "reason", "at_ms",
    "until_ms"}``; the conductor refuses an action on a pinned field), ``deployed`` (a
    promoted version it can roll back to), ``promoted_ago_ms`` and ``remedied_ago_ms``
    (since it was last rolled back, quarantined or released, by the conductor or the
    operator, or ``None``; a restart runs the same code, and a dead letter takes one
    delivery away, so neither is one), ``last_error``, ``journal_error`` (why a durable
    agent's journal cannot be written, a full disk for one, or ``None``),
    ``start_failures`` (its failed starts in a row: ``0`` once it started), ``p99_us``
    (send to ack, its replicas' highest), ``high_water``, ``ladder`` (the rung it is at on
    each ladder: ``{pattern: {"rung", "ago_ms"}}``, or ``None``) and ``signals``, what the
    BEAM measured for the analytics (``Symbiont.Signals``; docs/ANALYTICS.md):

    * ``latency``: the evidence that its recent handling times are worse than its
      version's baseline (or the version before's, ``baseline["own"]`` false): ``n``
      samples, ``k`` of them above ``bar_us``, ``p`` (how likely that is if nothing
      changed), ``p50_us``, ``p99_us``, ``baseline`` (``n``, ``p50_us``, ``p99_us``,
      ``version``, ``own``); or ``None``;
    * ``failures``: the same for the failures of its last deliveries against its
      baseline's failure rate (``n``, ``k``, ``p``, ``baseline_rate``, ``baseline``);
    * ``crashes``: its crashes since its last remedy within a window of *uptime* (a loop
      whose restart backoff grew to seconds is still a loop): ``n``, ``deliveries`` (how
      many different deliveries were running: one poison message is one), ``uptime_ms``,
      ``last_ago_ms``; or ``None``;
    * ``queue``: ``arrival_per_s``, ``departure_per_s``, ``service_us`` (the mean
      handling time of an event), ``cpu_us`` (how much of it its host spent on the CPU,
      or ``None``), ``utilization`` (its replicas' handlers' share of the tick),
      ``high_water``;
    * ``memory``: its host process's ``rss_bytes``, ``growth_bps`` (least squares over
      the last ``readings``), ``r2``, ``grown_bytes``, ``span_ms``; or ``None``;
    * ``replicas`` (with more than one replica): the same per replica, with its ``id``
      and ``host``; the agent's are the strongest of them.

    ``snapshot["topology"]["edges"]`` lists ``{"from", "topic", "to"}``;
    ``snapshot["templates"]`` maps template names to ``{"match", "python", "wasm"}``, and
    ``snapshot["topology"]["topics"]`` lists the topics a ``match`` matches as
    ``{"topic", "published", "subscribers"}``.

    **Escalation.** A pattern is answered by the next rung of its ladder
    (:data:`symbiont._analytics.LADDERS`) once the last remedy had ``settle_ms`` to work
    and the pattern is still there; the evidence of each action records its ladder and
    rung (``{"ladder": {"pattern", "rung", "rungs"}}``), which the BEAM keeps (from the
    audit trail, across restarts of the conductor) and gives back as the agent's
    ``ladder``. A ladder starts again from the bottom once its last rung is
    ``ladder_reset_ms`` old and the pattern went away meanwhile (a pattern that never
    did stays at its top). Past the top rung nothing more is tried: no agent is
    restarted for ever.

    **Evidence is spent once answered**, and only by a remedy of its own cause: the crash
    signal counts the crashes since the agent's last rollback, quarantine or release (not
    since a dead letter: the crashes one poison message caused count as one delivery's);
    a restart on purpose starts an agent's latency samples and failure window over; the
    ticks counted for a scale start again when its replica count changes or while it is
    pinned, so that a scale is judged on what followed it.

    The rules (:attr:`rules`), in order; an agent gets at most one action a tick (the
    first rule's), and none on a field the operator pinned:

    * :meth:`crash_loop_rule` - ``crash_loop`` crashes within the uptime window, on more than
      one delivery -> its ladder (``rollback``, ``quarantine``);
    * :meth:`poison` - a delivery that already failed ``poison_after`` times ->
      ``dead_letter`` (the agent keeps going);
    * :meth:`regression` - worse since a promotion that can be undone (its latency
      evidence at most ``alpha``; its failures' against the version before; or failing
      within ``regression_ms`` of the promotion) -> ``rollback``; slower than its own
      history with nothing to undo, on at least ``latency_share`` of its recent events
      (a burst of a few slow ones, after a restart of its host or behind a noisy
      neighbour, is no reason to restart it) -> ``restart`` (once: its ladder has one
      rung);
    * :meth:`failing` - failing agents (a cascade is answered at its roots, along the
      topology; downstream of a failing agent or of one acted on within ``settle_ms``,
      they are symptoms): its ladder (``restart``, ``rollback``, ``quarantine``); not an
      agent failing on its journal (its disk, not its code), nor one failing to start
      (its own rule retries, then quarantines it), nor one that crashed within
      ``settle_ms`` (its crashes restart it already, and the crash loop rule answers
      them; one crash long ago does not keep a failing agent off its ladder);
    * :meth:`leak` - its host's memory grows steadily (``leak_bps`` or more over at
      least ``leak_readings`` readings with an r² of ``leak_r2``) above ``leak_floor``
      bytes -> its ladder (``restart``, then ``quarantine`` when it grows again); Python
      agents only (a Wasm agent's memory is bounded by its limits, and its host is
      shared);
    * :meth:`noisy` - a Wasm replica that takes more than half (``share``) of the time
      of a host busy over 70% (``utilisation``) while a co-tenant's p99 is over 50 ms
      (``co_tenant_p99_ms``), ``ticks`` (2) ticks in a row -> ``reroute`` it to a host of
      its own; once moved it is alone there and never looked at again, and a reroute
      that did not happen is not proposed again for ``settle_ms`` (30 s)
      (:class:`~symbiont._placement_rules.NoisyNeighbour`, its thresholds in the
      ``noisy_neighbour`` option; ``snapshot["hosts"]`` says how each shared host's time
      goes);
    * :meth:`capacity` - Little's law: a managed agent needs
      ``ceil((arrivals + queue / drain_s) x service time / utilisation)`` replicas; more
      than it has for ``grow_ticks`` ticks -> ``scale`` to that many at once (up to
      ``max_replicas``), at its bottleneck first (the most upstream agent whose queue
      grows); fewer, at ``low_utilisation``, for ``drain_ticks`` ticks with nothing
      waiting -> ``scale`` in to that many (down to ``min_replicas``). Between the two
      utilisations it stays (hysteresis);
    * :meth:`idle` - nothing for ``idle_ms`` -> ``scale`` in, and ``retire`` an agent that
      is not required once at its minimum;
    * :meth:`evolution` - a topic that a template's ``match`` pattern matches (``*`` is
      one dot-separated segment), published to since the last tick and served by nobody
      -> ``spawn`` an agent ``"<template>-<segment>"`` from that template, with
      ``{"topic", "tenant"}`` in its config (one agent per tenant). Spawned agents are
      not required, so the idle rule retires them again.
    """

    def __init__(
        self,
        *,
        poison_after: int = 2,
        crash_loop: int = 3,
        grow_ticks: int = 2,
        drain_ticks: int = 3,
        idle_ms: int = 60_000,
        regression_ms: int = 30_000,
        settle_ms: int = 5_000,
        ladder_reset_ms: int = 600_000,
        alpha: float = 1e-3,
        alpha_exit: float = 1e-2,
        leak_bps: float = 1 << 20,
        leak_floor: int = 256 << 20,
        leak_readings: int = 5,
        leak_r2: float = 0.8,
        utilisation: float = 0.8,
        low_utilisation: float = 0.5,
        drain_s: float = 10.0,
        latency_share: float = 0.5,
        noisy_neighbour: dict[str, Any] | None = None,
        **removed: Any,
    ) -> None:
        for name in removed:
            why = _REMOVED.get(name, "no such option")
            raise TypeError(f"DefaultPolicy option {name!r}: {why}")
        self.poison_after = poison_after
        self.crash_loop = crash_loop
        self.grow_ticks = grow_ticks
        self.drain_ticks = drain_ticks
        self.idle_ms = idle_ms
        self.regression_ms = regression_ms
        self.settle_ms = settle_ms
        self.ladder_reset_ms = ladder_reset_ms
        self.alpha = alpha
        self.alpha_exit = alpha_exit
        self.leak_bps = leak_bps
        self.leak_floor = leak_floor
        self.leak_readings = leak_readings
        self.leak_r2 = leak_r2
        self.utilisation = utilisation
        self.low_utilisation = low_utilisation
        self.drain_s = drain_s
        self.latency_share = latency_share
        self.noisy_neighbour = NoisyNeighbour(**(noisy_neighbour or {}))
        #: The rules, in order (see the class docstring): append yours.
        self.rules: list[Rule] = [
            self.crash_loop_rule,
            self.poison,
            self.regression,
            self.failing,
            self.leak,
            self.noisy,
            self.capacity,
            self.idle,
            self.evolution,
        ]
        # Per agent: its replica count at the last tick; its queue lengths, arrival rates
        # and handling times of the last ticks (since its count last changed); how many
        # ticks in a row it needed more replicas, or fewer; and whether it is slow
        # (latency evidence under alpha, until it is over alpha_exit: hysteresis).
        self._replicas: dict[str, int] = {}
        self._queues: dict[str, list[int]] = {}
        self._rates: dict[str, list[tuple[float, float | None]]] = {}
        self._needs: dict[str, list[tuple[int, int, int]]] = {}
        self._slow: set[str] = set()
        self._published: dict[str, int] = {}
        # When each (agent, pattern) was last seen (snapshot ms): whether a ladder may
        # start over (Tick.climb).
        self._present: dict[tuple[str, str], int] = {}

    def decide(self, snapshot: Snapshot) -> list[dict[str, Any]]:
        """Return the actions for this tick: each rule's, in order, one per agent."""
        tick = Tick(snapshot, self)
        self._remember(tick)
        for rule in self.rules:
            acted = tick.acted
            for action in rule(tick):
                if action["agent"] not in acted:
                    acted.add(action["agent"])
                    tick.actions.append(action)
        return tick.actions

    # -- the rules ------------------------------------------------------------------

    def _watched(self, tick: Tick) -> Iterator[AgentSnapshot]:
        """The agents a rule looks at: not quarantined, without an action this tick."""
        acted = tick.acted
        for a in tick.agents.values():
            if not a["quarantined"] and a["name"] not in acted:
                yield a

    def crash_loop_rule(self, tick: Tick) -> Iterator[dict[str, Any]]:
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

    def poison(self, tick: Tick) -> Iterator[dict[str, Any]]:
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

    def regression(self, tick: Tick) -> Iterator[dict[str, Any]]:
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
                slow
                and latency["k"] >= self.latency_share * latency["n"]
                and name not in tick.crowded
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

    def failing(self, tick: Tick) -> Iterator[dict[str, Any]]:
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

    def leak(self, tick: Tick) -> Iterator[dict[str, Any]]:
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

    def noisy(self, tick: Tick) -> Iterator[dict[str, Any]]:
        """**Noisy neighbour** (:class:`~symbiont._placement_rules.NoisyNeighbour`): a Wasm
        replica hogging its shared host while a co-tenant suffers -> ``reroute`` it to a
        host of its own."""
        yield from self.noisy_neighbour.decide(tick.snapshot)

    def capacity(self, tick: Tick) -> Iterator[dict[str, Any]]:
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
            need = analytics.replicas_needed(
                arrival + queue / self.drain_s, service, self.utilisation
            )
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

    def idle(self, tick: Tick) -> Iterator[dict[str, Any]]:
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

    def evolution(self, tick: Tick) -> Iterator[dict[str, Any]]:
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
                    f"{t['topic']} is published to and served by nobody: "
                    f"one {template} agent for it",
                    template=template,
                    config={"topic": t["topic"], "tenant": tenant},
                    evidence={"topic": t["topic"], "published": t["published"]},
                )

    # -- history and helpers ----------------------------------------------------------

    def _remember(self, tick: Tick) -> None:
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

    def _rate(self, name: str) -> tuple[float, float | None]:
        """Its arrival rate at the last tick (events/s), and its handling time (µs): the
        mean over the last ticks where an event finished."""
        rates = self._rates.get(name, [])
        if not rates:
            return 0.0, None
        services = [s for _, s in rates if s is not None]
        return rates[-1][0], (sum(services) / len(services) if services else None)

    def _is_slow(self, name: str, latency: dict[str, Any] | None) -> bool:
        """Whether its latency evidence says slower: under ``alpha`` to become so, over
        ``alpha_exit`` to stop (hysteresis)."""
        limit = self.alpha_exit if name in self._slow else self.alpha
        if analytics.regressed(latency, limit):
            self._slow.add(name)
            return True
        self._slow.discard(name)
        return False

    def _scalable(self, tick: Tick) -> Iterator[AgentSnapshot]:
        """The agents the scaling rules look at: managed, not pinned on their count."""
        for a in self._watched(tick):
            if a.get("managed") and "replicas" not in _pins(a):
                yield a

    def _failing_set(self, tick: Tick) -> set[str]:
        return {n for n, a in tick.agents.items() if self._failing(a)}

    def _symptom(self, tick: Tick, name: str, failing: set[str]) -> bool:
        """Whether ``name`` fails downstream of a failing agent, or of one the conductor
        just acted on (it settles)."""
        return bool(analytics.ancestors(name, tick.upstream) & (failing | tick.settling))

    @staticmethod
    def _failing(a: AgentSnapshot) -> bool:
        return not a["quarantined"] and (
            a.get("failed_delta", 0) > 0
            and a.get("handled_delta", 0) == 0
            or a.get("health") == "failing"
        )
