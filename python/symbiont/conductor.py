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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from . import _analytics as analytics
from . import _conductor_rules as rules
from . import _contract
from ._conductor_rules import _action, _pins
from ._conductor_rules import _wildcard as _wildcard
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

    # -- the rules and what they remember: symbiont._conductor_rules ------------------

    _watched = rules._watched
    crash_loop_rule = rules.crash_loop_rule
    poison = rules.poison
    regression = rules.regression
    failing = rules.failing
    leak = rules.leak
    noisy = rules.noisy
    capacity = rules.capacity
    idle = rules.idle
    evolution = rules.evolution
    _remember = rules._remember
    _rate = rules._rate
    _is_slow = rules._is_slow
    _scalable = rules._scalable
    _failing_set = rules._failing_set
    _symptom = rules._symptom

    @staticmethod
    def _failing(a: AgentSnapshot) -> bool:
        return not a["quarantined"] and (
            a.get("failed_delta", 0) > 0
            and a.get("handled_delta", 0) == 0
            or a.get("health") == "failing"
        )
