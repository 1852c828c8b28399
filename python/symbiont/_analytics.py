"""The analytics of the default policy (docs/ANALYTICS.md): small pure functions that read
what the BEAM measured (an agent's ``signals`` in the conductor's snapshot) and say what
it means. The BEAM measures (windows, rates, percentiles, the statistical evidence of a
regression: ``Symbiont.Signals``, ``Symbiont.Stats``); these functions only threshold
it, so that a policy of your own can reuse them, or replace any one of them.

Each works on plain dicts as the snapshot has them:

* :func:`regressed` - a latency or failure regression: the BEAM's evidence (``p``, the
  probability of seeing that many samples above the bar if nothing changed) at most
  ``alpha``;
* :func:`leaking` - a host whose resident memory grows steadily (a least-squares slope
  over several readings, a good fit, and above an absolute floor);
* :func:`replicas_needed` - Little's law: how many replicas keep up with an arrival rate
  at a target utilisation;
* :func:`roots` - the agents of a set that no other agent of the set feeds, along the
  topology (the bottleneck of a chain, the root of a cascade);
* :data:`LADDERS` and :func:`next_rung` - escalation: each pattern's remedies, and which
  to try next given the rung an agent is at.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "LADDERS",
    "leaking",
    "next_rung",
    "regressed",
    "replicas_needed",
    "roots",
    "upstream_of",
]

#: Each pattern's ladder: the remedies tried in order, one rung up each time the last one
#: did not change the signal within its settle time (a rung whose remedy does not apply is
#: skipped: ``rollback`` needs a promoted version to undo; a pinned field is the
#: operator's). After the top rung nothing more is tried: the agent stays quarantined, or
#: on the version it was rolled back to, until the operator acts (a ``quarantine`` on top
#: is applied again if someone released the agent and the pattern came back).
#:
#: * ``crash_loop``: its host restarts it by itself (and moves a Wasm agent that crashes a
#:   shared host to a host of its own: ``Symbiont.Host.Blame``) before the conductor
#:   sees a loop; then ``rollback`` when a promoted version can be undone, then
#:   ``quarantine``;
#: * ``failing`` (its handler fails, no crash): ``restart``, ``rollback``, ``quarantine``;
#: * ``regression`` (worse since a promotion: latency, or errors against the version
#:   before): ``rollback``;
#: * ``latency`` (slower than its own history, nothing to undo): ``restart``;
#: * ``leak`` (its host's memory grows steadily): ``restart``, then ``quarantine`` when
#:   the growth resumes after the restart.
LADDERS: dict[str, tuple[str, ...]] = {
    "crash_loop": ("rollback", "quarantine"),
    "failing": ("restart", "rollback", "quarantine"),
    "regression": ("rollback",),
    "latency": ("restart",),
    "leak": ("restart", "quarantine"),
}


def regressed(evidence: Mapping[str, Any] | None, alpha: float) -> bool:
    """Whether ``evidence`` (an agent's ``signals["latency"]`` or ``signals["failures"]``)
    says worse: its ``p`` (how likely so many samples above the bar are if nothing
    changed) is at most ``alpha``. No evidence (no samples, no baseline) is not worse."""
    return evidence is not None and evidence.get("p", 1.0) <= alpha


def leaking(
    memory: Mapping[str, Any] | None,
    *,
    min_bps: float,
    floor_bytes: int,
    min_readings: int,
    min_r2: float,
) -> bool:
    """Whether a host's ``signals["memory"]`` says it leaks: over at least
    ``min_readings`` readings of one process, its resident set grows by ``min_bps`` bytes
    a second or more, steadily (the least-squares fit's r² at least ``min_r2``: a cache
    that fills then stays, or the sawtooth of a garbage collector, is no leak), and is
    above ``floor_bytes`` now."""
    return (
        memory is not None
        and memory.get("readings", 0) >= min_readings
        and memory.get("growth_bps", 0) >= min_bps
        and memory.get("r2", 0.0) >= min_r2
        and memory.get("rss_bytes", 0) >= floor_bytes
    )


def replicas_needed(arrival_per_s: float, service_us: float, utilisation: float) -> int:
    """Little's law: the replicas that serve ``arrival_per_s`` events a second, each taking
    ``service_us`` of a replica's time, busy ``utilisation`` of the time (0 to 1):
    ``ceil(arrival x service / utilisation)``, at least 1.

    >>> replicas_needed(50, 50_000, 0.8)
    4
    """
    load = arrival_per_s * service_us / 1e6
    return max(1, math.ceil(load / utilisation - 1e-9))


def upstream_of(edges: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """Who feeds whom: for each agent, the agents that publish on a topic it consumes
    (``snapshot["topology"]["edges"]``)."""
    upstream: dict[str, set[str]] = {}
    for edge in edges:
        if edge["from"] != edge["to"]:
            upstream.setdefault(edge["to"], set()).add(edge["from"])
    return upstream


def ancestors(name: str, upstream: Mapping[str, set[str]]) -> set[str]:
    """Every agent upstream of ``name``, however far."""
    seen: set[str] = set()
    stack = list(upstream.get(name, ()))
    while stack:
        n = stack.pop()
        if n in seen or n == name:
            continue
        seen.add(n)
        stack.extend(upstream.get(n, ()))
    return seen


def roots(names: set[str], upstream: Mapping[str, set[str]]) -> dict[str, list[str]]:
    """The agents of ``names`` that no other agent of ``names`` is upstream of, each with
    the agents of ``names`` downstream of it: along a chain, where a trouble starts (the
    root of a cascading failure, the bottleneck whose queue grows while its upstream's
    does not)."""
    found = {}
    for name in sorted(names):
        if ancestors(name, upstream) & names:
            continue
        found[name] = sorted(n for n in names if name in ancestors(n, upstream))
    return found


def next_rung(
    pattern: str,
    at: Mapping[str, Any] | None,
    applies: Callable[[str], bool],
    *,
    settle_ms: int,
    reset_ms: float,
    in_place: Callable[[str], bool] = lambda remedy: False,
) -> tuple[str, int] | None:
    """The remedy to apply now for ``pattern`` and its rung (1 is the bottom), given the
    rung the agent is at (``at``: ``{"rung", "ago_ms"}`` from its ``ladder`` in the
    snapshot, or ``None``); ``None`` to wait or when nothing is left to try.

    * the last remedy was applied less than ``settle_ms`` ago: wait for it to work;
    * it was applied more than ``reset_ms`` ago (or never): start from the bottom;
    * else one rung up: the first remedy above the last whose ``applies(remedy)`` is true;
    * past the top: nothing, unless the top is a state the agent is no longer in
      (``in_place(top)`` false: a quarantine someone lifted), which is applied again.

    >>> next_rung("failing", None, lambda r: True, settle_ms=5_000, reset_ms=600_000)
    ('restart', 1)
    >>> next_rung("failing", {"rung": 1, "ago_ms": 6_000}, lambda r: r != "rollback",
    ...           settle_ms=5_000, reset_ms=600_000)
    ('quarantine', 3)
    >>> next_rung("failing", {"rung": 1, "ago_ms": 1_000}, lambda r: True,
    ...           settle_ms=5_000, reset_ms=600_000) is None
    True
    """
    rungs = LADDERS[pattern]
    start = 0
    if at is not None and at.get("ago_ms", math.inf) < reset_ms:
        if at["ago_ms"] < settle_ms:
            return None
        start = at.get("rung", 0)
    for i in range(start, len(rungs)):
        if applies(rungs[i]):
            return rungs[i], i + 1
    top = rungs[-1]
    if start >= len(rungs) and top == "quarantine" and applies(top) and not in_place(top):
        return top, len(rungs)
    return None
