"""The shop's conductor policy: the default one, plus probation for quarantined agents.

The default policy quarantines an agent in a crash loop and leaves it there, for a
human to look at. The shop's billing crashes because of a flaky payment library, not
because of a bad release, so this policy lets it out again after ``probation_s``
seconds (``release``): its events waited in its queue meanwhile, and if it crash-loops
again it is quarantined again.

Named in ``examples/shop/config.exs``::

    conductor: [policy: "shop_policy:ShopPolicy", policy_options: %{"probation_s" => 10}]
"""

from __future__ import annotations

from typing import Any

from symbiont.conductor import DefaultPolicy


class ShopPolicy(DefaultPolicy):
    """:class:`~symbiont.conductor.DefaultPolicy`, and ``release`` after ``probation_s``."""

    def __init__(self, *, probation_s: float = 10, **options: Any) -> None:
        super().__init__(**options)
        self.probation_ms = probation_s * 1000
        self._quarantined_at: dict[str, int] = {}

    def decide(self, snapshot: dict[str, Any]) -> list[dict[str, Any]]:
        """The default policy's actions, then a release for each agent whose
        quarantine has lasted ``probation_s``."""
        actions = super().decide(snapshot)
        now = snapshot["now_ms"]
        acted = {a["agent"] for a in actions}
        # An agent the operator quarantined (or released) by hand is theirs: it is pinned.
        quarantined = {
            a["name"]
            for a in snapshot["agents"]
            if a["quarantined"] and "quarantine" not in (a.get("pins") or {})
        }
        for name in set(self._quarantined_at) - quarantined:
            del self._quarantined_at[name]
        for name in sorted(quarantined - acted):
            since = self._quarantined_at.setdefault(name, now)
            if now - since >= self.probation_ms:
                actions.append(
                    {
                        "action": "release",
                        "agent": name,
                        "reason": f"on probation after {(now - since) // 1000} s in quarantine",
                        "evidence": {"quarantined_ms": now - since},
                    }
                )
        return actions
