"""The placement rules of the default policy: a noisy neighbour is moved away.

A host runs its agents' deliveries one at a time, on one thread; Wasm agents share hosts
(``wasm#1``, ``wasm#2``...), so an agent whose handlers take most of a busy host's time
makes its co-tenants wait behind it, however cheap their own handlers are: their p99
goes from milliseconds to seconds. Scaling it out does not help them (its new replicas go
to other hosts, but the one they share stays); moving it does.

The snapshot's ``hosts`` (``Symbiont.Host.Usage``) lists each host of more than one agent:
``name``, ``agents`` (how many it runs), ``utilisation`` (0.0 to 1.0: the share of its last
few heartbeats it spent in handlers), ``window_ms``, and ``shares``, the agents that took
any of that time, the busiest first, each ``{"id", "name", "role", "share", "busy_ms"}``.

:class:`NoisyNeighbour` is one rule of :class:`~symbiont.conductor.DefaultPolicy`, with its
thresholds as parameters (the conductor's ``policy_options``: ``{"noisy_neighbour":
{"share": 0.6, ...}}``); a policy of your own can use it as it is.
"""

from __future__ import annotations

from typing import Any

from ._contract import AgentSnapshot, Snapshot

__all__ = ["NoisyNeighbour"]


class NoisyNeighbour:
    """A Wasm agent that takes a disproportionate share of a busy host's time while its
    co-tenants wait is rerouted to a host of its own.

    A replica is **noisy** when its host runs other agents, is busy (``utilisation`` over
    ``utilisation``), the replica takes more than ``share`` of that busy time, and at
    least one co-tenant that took some of it **waits**: its p99 (``p99_us`` of the
    snapshot, over its last deliveries) is over ``co_tenant_p99_ms``. After ``ticks``
    ticks in a row of that, the rule proposes ``reroute`` of that replica (``id``), with
    the host, its utilisation, the share and the co-tenants' p99 as evidence.

    It does not bounce: once rerouted, the replica is alone in its host, and a host of
    one agent is never looked at (the manifest keeps it there, and places no other
    replica with it). A reroute that did not happen (refused or failed: the replica is
    still in the shared host) is not proposed again for that replica before
    ``settle_ms`` (of the snapshot's ``now_ms``) have passed, so a remedy that cannot be
    applied is not retried tick after tick. It leaves alone a canary (the deploy's), a
    quarantined agent, a Python agent (its host is its own) and one the operator pinned
    (the conductor refuses it too), and takes evidence afresh after each of its proposals.
    """

    def __init__(
        self,
        *,
        share: float = 0.5,
        utilisation: float = 0.7,
        co_tenant_p99_ms: float = 50.0,
        ticks: int = 2,
        settle_ms: int = 30_000,
    ) -> None:
        for name, value, low, high in (
            ("share", share, 0.0, 1.0),
            ("utilisation", utilisation, 0.0, 1.0),
        ):
            if not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(f"noisy_neighbour {name} must be a number in 0..1, got: {value!r}")
        if not isinstance(co_tenant_p99_ms, int | float) or co_tenant_p99_ms < 0:
            raise ValueError(
                f"noisy_neighbour co_tenant_p99_ms must be a number >= 0, got: {co_tenant_p99_ms!r}"
            )
        if not isinstance(ticks, int) or ticks < 1:
            raise ValueError(f"noisy_neighbour ticks must be an int >= 1, got: {ticks!r}")
        if not isinstance(settle_ms, int) or settle_ms < 0:
            raise ValueError(f"noisy_neighbour settle_ms must be an int >= 0, got: {settle_ms!r}")
        self.share = share
        self.utilisation = utilisation
        self.co_tenant_p99_ms = co_tenant_p99_ms
        self.ticks = ticks
        self.settle_ms = settle_ms
        # (host, replica id) -> ticks in a row it was noisy.
        self._streaks: dict[tuple[str, str], int] = {}
        # replica id -> now_ms of the last reroute proposed for it.
        self._proposed: dict[str, int] = {}

    def decide(self, snapshot: Snapshot) -> list[dict[str, Any]]:
        """The ``reroute`` actions for this tick's snapshot (see the class docstring)."""
        agents = {a["name"]: a for a in snapshot.get("agents", [])}
        now = snapshot.get("now_ms", 0)
        self._proposed = {i: at for i, at in self._proposed.items() if now - at < self.settle_ms}
        streaks: dict[tuple[str, str], int] = {}
        actions: list[dict[str, Any]] = []
        for host in snapshot.get("hosts", []):
            if host.get("agents", 0) < 2 or host.get("utilisation", 0.0) <= self.utilisation:
                continue
            shares = host.get("shares", [])
            for noisy in shares:
                a = agents.get(noisy["name"])
                if noisy["share"] <= self.share or not self._movable(noisy, a):
                    continue
                if noisy["id"] in self._proposed:  # proposed less than settle_ms ago
                    continue
                waiting = self._waiting(noisy["name"], shares, agents)
                if not waiting:
                    continue
                key = (host["name"], noisy["id"])
                streaks[key] = n = self._streaks.get(key, 0) + 1
                if n < self.ticks:
                    continue
                streaks.pop(key)  # evidence afresh after a proposal
                self._proposed[noisy["id"]] = now
                slowest = max(waiting.values())
                actions.append(
                    {
                        "action": "reroute",
                        "agent": noisy["name"],
                        "id": noisy["id"],
                        "reason": (
                            f"noisy neighbour: {noisy['id']} takes {noisy['share']:.0%} of host "
                            f"{host['name']} ({host['utilisation']:.0%} busy); its co-tenants "
                            f"wait (p99 up to {slowest:.0f} ms): a host of its own"
                        ),
                        "evidence": {
                            "host": host["name"],
                            "utilisation": host["utilisation"],
                            "share": noisy["share"],
                            "window_ms": host.get("window_ms"),
                            "co_tenants_p99_ms": waiting,
                            "ticks": n,
                        },
                    }
                )
        self._streaks = streaks
        return actions

    @property
    def pending(self) -> set[str]:
        """The agents this rule is gathering evidence on, or just proposed to move: another
        rule should not scale them out meanwhile (a new replica relieves a replica stuck
        behind its noisy sibling less than a host of its own does)."""
        ids = [i for _host, i in self._streaks] + list(self._proposed)
        return {i.split("#", 1)[0] for i in ids}

    @staticmethod
    def _movable(share: dict[str, Any], agent: AgentSnapshot | None) -> bool:
        return (
            agent is not None
            and share.get("role", "stable") == "stable"
            and not agent.get("quarantined")
            and not agent.get("pins")
            and str(agent.get("version", "")).startswith("wasm:")
        )

    def _waiting(
        self, noisy: str, shares: list[dict[str, Any]], agents: dict[str, AgentSnapshot]
    ) -> dict[str, float]:
        """The co-tenants (other agents that took some of the host's time) whose p99 is over
        ``co_tenant_p99_ms``: name -> p99 in ms."""
        waiting: dict[str, float] = {}
        for other in shares:
            if other["name"] == noisy:
                continue
            agent = agents.get(other["name"])
            p99_us = agent.get("p99_us") if agent is not None else None
            if p99_us is not None and p99_us > self.co_tenant_p99_ms * 1000:
                waiting[other["name"]] = round(p99_us / 1000, 1)
        return waiting
