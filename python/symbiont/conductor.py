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
between ticks.
"""

from __future__ import annotations

import importlib
import re
from itertools import pairwise
from typing import Any, Protocol

from ._placement_rules import NoisyNeighbour

__all__ = ["ACTIONS", "DefaultPolicy", "Policy", "decide"]

#: The actions a policy may return.
ACTIONS = frozenset(
    {
        "restart",
        "scale",
        "quarantine",
        "release",
        "rollback",
        "deploy",
        "retire",
        "spawn",
        "reroute",
        "dead_letter",
    }
)


class Policy(Protocol):
    """What the conductor needs of a policy."""

    def decide(self, snapshot: dict[str, Any]) -> list[dict[str, Any]]:
        """Return the actions to take for ``snapshot`` (possibly none)."""
        ...


_policies: dict[tuple[str, str], Policy] = {}


def decide(policy: str, options: dict[str, Any], snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """Entry point called by the BEAM: the actions of ``policy`` for ``snapshot``.

    ``policy`` is ``"module:Class"``; the instance is built once per (policy, options)
    and kept, so that it can remember earlier ticks.
    """
    # What a policy can derive is left out of each agent's map on the BEAM (at most 32
    # keys there: a larger map costs ten times as much to build, 10,000 a tick), and
    # added here.
    for agent in snapshot.get("agents", []):
        agent.setdefault("deployed", agent.get("promoted_ago_ms") is not None)
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


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


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


class DefaultPolicy:
    """Recognises the usual failure patterns and answers each with one action.

    Each agent in ``snapshot["agents"]`` (over its stable replicas; see
    ``Symbiont.Observation`` for what the words mean) has: ``name``, ``replicas`` (running
    count), ``managed`` (in the manifest: can be scaled), ``min_replicas``,
    ``max_replicas``, ``required``, ``version``, ``queue``, ``high_water``, ``in_flight``,
    ``handled``, ``failed``, ``crashes`` (the deaths of its host charged to it: its code
    was running; being restarted because a neighbour crashed a shared host, an upgrade or
    a restart by hand is a restart, not a crash), ``restarts`` (it started again, for any
    reason), ``handled_delta``, ``failed_delta``, ``crashes_delta``, ``restarts_delta``
    (since the last tick, or since the conductor started), ``failure_rate`` (over its last
    deliveries, or ``None``), ``idle_ms``, ``p99_us``, ``quarantined``, ``suspect``
    (``{"id", "topic", "attempts"}`` of a delivery that failed before, or ``None``),
    ``health`` and ``health_reason`` (``healthy``, ``degraded``, ``overloaded``, ``failing``
    or ``quarantined``: the worst of its replicas', its failure rate included), ``canary``
    (the version on trial beside it: its own ``health``, ``failed``, ``crashes``...; the
    deploy judges it, or ``None``), ``pins`` (what the operator set by hand, by field:
    ``replicas``, ``quarantine``, ``version``, each ``{"value", "by", "reason", "at_ms",
    "until_ms"}``; the conductor refuses an action on a pinned field), ``deployed`` (a
    promoted version it can roll back to), ``promoted_ago_ms`` and ``remedied_ago_ms``
    (since it was last rolled back, quarantined, released or dead-lettered for, by the
    conductor or the operator, or ``None``; a restart runs the same code, so it is not one),
    ``last_error``, ``journal_error`` (why a durable agent's journal cannot be written,
    a full disk for one, or ``None``), and ``start_failures`` (its failed starts in a row:
    ``0`` once it started).
    ``snapshot["topology"]["edges"]`` lists ``{"from", "topic", "to"}``.

    Evidence is spent once answered: the crashes counted for a crash loop are those since
    the agent's last remedy, so that the version a rollback brought back is not
    quarantined for the crashes of the one it replaced; the ticks counted for a drained or
    growing queue start again when its replica count changes or while it is pinned, so
    that a scale is judged on what followed it.

    The patterns, in order (an agent gets at most one action a tick, and none on a field
    the operator pinned):

    * **crash loop**: ``crash_loop`` crashes within ``window_ticks`` ticks, more than one
      delivery accounts for -> ``rollback`` if a promoted version can be undone, else
      ``quarantine``;
    * **poison message**: a delivery that already failed ``poison_after`` times ->
      ``dead_letter`` (the agent keeps going);
    * **cascading failure**: failing agents downstream of a failing agent, or of one the
      conductor acted on within ``settle_ms``, are symptoms: only the roots get an
      action, a ``restart``; but not a root failing because its journal cannot be written
      (``journal_error``): a restart would not free the disk, only send its deliveries in
      flight again. It recovers by itself once the disk takes writes. Nor one that fails
      to start (``start_failures``): a restart would run the same code again, and the
      agent tries again by itself, then quarantines itself; nor one that crashed within
      ``window_ticks``: its crashes restart it already, and the crash loop rule answers
      them;
    * **regression after deploy**: errors right after a promotion -> ``rollback``;
    * **noisy neighbour**: a Wasm replica that takes more than half (``share``) of the
      time of a host busy over 70% (``utilisation``) while a co-tenant's p99 is over
      50 ms (``co_tenant_p99_ms``), ``ticks`` (2) ticks in a row -> ``reroute`` it to a
      host of its own; once moved it is alone there and never looked at again, and a
      reroute that did not happen is not proposed again for ``settle_ms`` (30 s)
      (:class:`~symbiont._placement_rules.NoisyNeighbour`, its thresholds in the
      ``noisy_neighbour`` option; ``snapshot["hosts"]`` says how each shared host's time
      goes);
    * **slow consumer**: a queue over a third of its high-water mark and growing for
      ``grow_ticks`` ticks -> ``scale`` out by one (up to ``max_replicas``); drained and
      idle for ``drain_ticks`` ticks -> ``scale`` in by one (down to ``min_replicas``);
    * **idle agent**: nothing for ``idle_ms`` -> ``scale`` in, and ``retire`` an agent that
      is not required once at its minimum;
    * **evolution**: a topic that a template's ``match`` pattern matches (``*`` is one
      dot-separated segment), published to since the last tick and served by nobody ->
      ``spawn`` an agent ``"<template>-<segment>"`` from that template, with
      ``{"topic", "tenant"}`` in its config (one agent per tenant). Spawned agents are not
      required, so the idle rule retires them again.

    ``snapshot["templates"]`` maps template names to ``{"match", "python", "wasm"}``, and
    ``snapshot["topology"]["topics"]`` lists the topics a ``match`` matches as
    ``{"topic", "published", "subscribers"}``.
    """

    def __init__(
        self,
        *,
        poison_after: int = 2,
        crash_loop: int = 3,
        window_ticks: int = 10,
        grow_ticks: int = 2,
        drain_ticks: int = 3,
        idle_ms: int = 60_000,
        regression_ms: int = 30_000,
        settle_ms: int = 5_000,
        noisy_neighbour: dict[str, Any] | None = None,
    ) -> None:
        self.poison_after = poison_after
        self.crash_loop = crash_loop
        self.window_ticks = window_ticks
        self.grow_ticks = grow_ticks
        self.drain_ticks = drain_ticks
        self.idle_ms = idle_ms
        self.regression_ms = regression_ms
        self.settle_ms = settle_ms
        self.noisy_neighbour = NoisyNeighbour(**(noisy_neighbour or {}))
        # Per agent, (now_ms, crashes_delta) of the last window_ticks ticks.
        self._crashes: dict[str, list[tuple[int, int]]] = {}
        # Per agent, its replica count at the last tick.
        self._replicas: dict[str, int] = {}
        self._queues: dict[str, list[int]] = {}
        self._drained: dict[str, int] = {}
        self._published: dict[str, int] = {}

    def decide(self, snapshot: dict[str, Any]) -> list[dict[str, Any]]:
        """Return the actions for this tick (see the class docstring)."""
        agents = {a["name"]: a for a in snapshot.get("agents", [])}
        now = snapshot.get("now_ms", 0)
        self._remember(now, agents)
        actions: list[dict[str, Any]] = []
        acted: set[str] = set()
        # Agents that crashed within the window: their host restarts them by itself.
        crashing: set[str] = set()

        def add(action: dict[str, Any]) -> None:
            if action["agent"] not in acted:
                acted.add(action["agent"])
                actions.append(action)

        for a in agents.values():
            if a["quarantined"]:
                continue
            pinned = set(a.get("pins") or {})
            remedied = a.get("remedied_ago_ms")
            since = now - remedied if remedied is not None else None
            recent = sum(
                n for at, n in self._crashes.get(a["name"], []) if since is None or at > since
            )
            if recent:
                crashing.add(a["name"])
            suspect = a.get("suspect") or {}
            attempts = suspect.get("attempts", 0)
            # More crashes than one delivery accounts for: the agent, not a message. A
            # suspect accounts for one crash more than its attempts: the first, when
            # several deliveries were in flight and none was charged.
            if recent >= self.crash_loop and recent > attempts + (1 if attempts else 0):
                evidence = {"crashes_in_window": recent, "last_error": a.get("last_error")}
                if a.get("deployed") and "version" not in pinned:
                    add(
                        _action(
                            "rollback",
                            a["name"],
                            f"crash loop: {recent} crashes since its last deploy",
                            evidence=evidence,
                        )
                    )
                elif "quarantine" not in pinned:
                    add(
                        _action(
                            "quarantine",
                            a["name"],
                            f"crash loop: {recent} crashes in {self.window_ticks} ticks",
                            evidence=evidence,
                        )
                    )
            elif attempts >= self.poison_after:
                add(
                    _action(
                        "dead_letter",
                        a["name"],
                        f"poison message on {suspect.get('topic')}: failed {attempts} times",
                        evidence={"suspect": suspect},
                    )
                )

        failing = {n for n, a in agents.items() if self._failing(a)}
        if failing:
            upstream = self._upstream(snapshot)
            settling = self._recently_acted(snapshot)
            for name in sorted(failing):
                if self._failing_ancestors(name, failing | settling, upstream):
                    continue  # a symptom: its root gets (or just got) the action
                a = agents[name]
                if a.get("journal_error"):
                    continue  # its disk, not its code: it recovers when the disk does
                if a.get("start_failures"):
                    continue  # it retries its start itself, then quarantines itself
                downstream = sorted(
                    n for n in failing if name in self._failing_ancestors(n, failing, upstream)
                )
                if (
                    a.get("deployed")
                    and a.get("promoted_ago_ms", 1 << 62) < self.regression_ms
                    and "version" not in (a.get("pins") or {})
                ):
                    add(
                        _action(
                            "rollback",
                            name,
                            "errors right after a deploy",
                            evidence={"failed_delta": a["failed_delta"], "downstream": downstream},
                        )
                    )
                elif name in crashing:
                    continue  # restarted by its crashes already: the crash loop rule answers
                else:
                    reason = "root of a cascading failure" if downstream else "failing"
                    add(
                        _action(
                            "restart",
                            name,
                            reason,
                            evidence={
                                "failed_delta": a["failed_delta"],
                                "health": a.get("health"),
                                "downstream": downstream,
                            },
                        )
                    )

        for action in self.noisy_neighbour.decide(snapshot):
            add(action)

        for a in agents.values():
            if not a.get("managed") or a["quarantined"] or "replicas" in (a.get("pins") or {}):
                continue
            name = a["name"]
            queues = self._queues.get(name, [])
            growing = len(queues) > self.grow_ticks and all(
                x < y for x, y in pairwise(queues[-self.grow_ticks - 1 :])
            )
            if growing and a["queue"] * 3 > a["high_water"] and a["replicas"] < a["max_replicas"]:
                add(
                    _action(
                        "scale",
                        name,
                        f"queue growing: {queues[-self.grow_ticks - 1 :]}",
                        replicas=a["replicas"] + 1,
                        evidence={"queues": queues[-5:]},
                    )
                )
            elif self._drained.get(name, 0) >= self.drain_ticks and a["replicas"] > max(
                a["min_replicas"], a.get("desired_base", 1)
            ):
                add(
                    _action(
                        "scale",
                        name,
                        "queue drained",
                        replicas=a["replicas"] - 1,
                        evidence={"drained_ticks": self._drained[name]},
                    )
                )
            elif a["idle_ms"] >= self.idle_ms:
                if a["replicas"] > a["min_replicas"]:
                    add(
                        _action(
                            "scale",
                            name,
                            f"idle for {a['idle_ms']} ms",
                            replicas=a["replicas"] - 1,
                            evidence={"idle_ms": a["idle_ms"]},
                        )
                    )
                elif not a["required"]:
                    add(
                        _action(
                            "retire",
                            name,
                            f"idle for {a['idle_ms']} ms",
                            evidence={"idle_ms": a["idle_ms"]},
                        )
                    )
        for action in self._evolve(snapshot, agents):
            add(action)
        return actions

    def _evolve(
        self, snapshot: dict[str, Any], agents: dict[str, dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Spawn actions for topics a template matches that are new and served by nobody."""
        topics = snapshot.get("topology", {}).get("topics", [])
        before, self._published = self._published, {t["topic"]: t["published"] for t in topics}
        actions = []
        for template, spec in sorted(snapshot.get("templates", {}).items()):
            pattern = spec.get("match")
            for t in topics if pattern else []:
                tenant = _wildcard(pattern, t["topic"])
                name = f"{template}-{tenant}"
                fresh = t["published"] > before.get(t["topic"], 0)
                if tenant is None or t["subscribers"] or not fresh or name in agents:
                    continue
                if not _NAME.fullmatch(name):
                    continue  # not a valid agent name: no agent for it
                actions.append(
                    _action(
                        "spawn",
                        name,
                        f"{t['topic']} is published to and served by nobody: "
                        f"one {template} agent for it",
                        template=template,
                        config={"topic": t["topic"], "tenant": tenant},
                        evidence={"topic": t["topic"], "published": t["published"]},
                    )
                )
        return actions

    # -- history and helpers ----------------------------------------------------------

    def _remember(self, now: int, agents: dict[str, dict[str, Any]]) -> None:
        for name, a in agents.items():
            crashes = self._crashes.setdefault(name, [])
            crashes.append((now, a.get("crashes_delta", 0)))
            del crashes[: -self.window_ticks]
            # A scale (by hand, or by the conductor) or a pin on the count: the queue's
            # history is what follows, once the conductor may act on it again.
            replicas = a.get("replicas", 0)
            changed = self._replicas.get(name, replicas) != replicas
            self._replicas[name] = replicas
            if changed or "replicas" in (a.get("pins") or {}):
                self._queues.pop(name, None)
                self._drained.pop(name, None)
                if not changed:
                    continue
            queues = self._queues.setdefault(name, [])
            queues.append(a.get("queue", 0))
            del queues[:-10]
            busy = a.get("queue", 0) > 0 or a.get("in_flight", 0) > 0
            self._drained[name] = 0 if busy else self._drained.get(name, 0) + 1
        for gone in set(self._crashes) - set(agents):
            self._crashes.pop(gone, None)
            self._replicas.pop(gone, None)
            self._queues.pop(gone, None)
            self._drained.pop(gone, None)

    def _recently_acted(self, snapshot: dict[str, Any]) -> set[str]:
        """Agents the conductor acted on within ``settle_ms``: their downstream settles."""
        now = snapshot.get("now_ms", 0)
        return {
            r["agent"]
            for r in snapshot.get("remediations", [])
            if r.get("by") == "conductor"
            and r.get("result") == "applied"
            and isinstance(r.get("agent"), str)
            and now - r.get("at_ms", 0) < self.settle_ms
        }

    @staticmethod
    def _failing(a: dict[str, Any]) -> bool:
        return not a["quarantined"] and (
            a.get("failed_delta", 0) > 0
            and a.get("handled_delta", 0) == 0
            or a.get("health") == "failing"
        )

    @staticmethod
    def _upstream(snapshot: dict[str, Any]) -> dict[str, set[str]]:
        upstream: dict[str, set[str]] = {}
        for edge in snapshot.get("topology", {}).get("edges", []):
            if edge["from"] != edge["to"]:
                upstream.setdefault(edge["to"], set()).add(edge["from"])
        return upstream

    @staticmethod
    def _failing_ancestors(name: str, failing: set[str], upstream: dict[str, set[str]]) -> set[str]:
        seen: set[str] = set()
        stack = list(upstream.get(name, ()))
        while stack:
            n = stack.pop()
            if n in seen or n == name:
                continue
            seen.add(n)
            stack.extend(upstream.get(n, ()))
        return seen & failing
