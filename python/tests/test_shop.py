"""The shop of ``make shop`` (examples/shop): its Python agents without a BEAM, and its
conductor policy on hand-made snapshots."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "shop"))
from shop import Billing, Notifications, Orders  # noqa: E402
from shop_policy import ShopPolicy  # noqa: E402

from symbiont.testing import AgentHarness  # noqa: E402


def test_orders_come_at_the_configured_rate() -> None:
    # 10 a second is one every other tick of 50 ms; no rush.
    orders = AgentHarness(Orders, config={"rate": 10, "rush_for": 0})
    published = [p for _ in range(10) for p in orders.tick("take")]
    assert [order["id"] for _, order in published] == [1, 2, 3, 4, 5]
    assert {topic for topic, _ in published} == {"orders.created"}
    assert all(5 <= order["amount"] <= 100 for _, order in published)


def test_billing_keeps_the_takings_across_a_restart() -> None:
    billing = AgentHarness(Billing)
    billing.event("orders.priced", {"id": 1, "customer": "ada", "amount": 10.0, "price": 12.0})
    billing.restart()
    [(topic, charge)] = billing.event(
        "orders.priced", {"id": 2, "customer": "ken", "amount": 5.0, "price": 6.0}
    )
    assert topic == "billing.charged"
    assert charge == {"id": 2, "customer": "ken", "amount": 5.0, "price": 6.0, "takings": 18.0}
    assert billing.state == {"orders": 2, "takings": 18.0}


def test_notifications_send_a_receipt() -> None:
    notifications = AgentHarness(Notifications, config={"delay": 0})
    assert notifications.event("billing.charged", {"id": 3, "customer": "ada", "price": 1.5}) == [
        ("notifications.sent", {"id": 3, "customer": "ada", "price": 1.5})
    ]


def _agent(name: str, **fields: Any) -> dict[str, Any]:
    agent = {
        "name": name,
        "replicas": 1,
        "managed": True,
        "min_replicas": 1,
        "max_replicas": 3,
        "required": True,
        "queue": 0,
        "high_water": 30,
        "in_flight": 0,
        "handled": 0,
        "failed": 0,
        "restarts": 0,
        "handled_delta": 0,
        "failed_delta": 0,
        "restarts_delta": 0,
        "idle_ms": 0,
        "p99_us": None,
        "quarantined": False,
        "suspect": None,
        "health": None,
        "deployed": False,
        "promoted_ago_ms": None,
    }
    return {**agent, **fields}


def test_the_policy_releases_a_quarantine_after_the_probation() -> None:
    policy = ShopPolicy(probation_s=10)

    def tick(now_ms: int, quarantined: bool) -> list[dict[str, Any]]:
        agents = [_agent("billing", quarantined=quarantined)]
        return policy.decide({"now_ms": now_ms, "agents": agents, "topology": {"edges": []}})

    assert tick(1_000, True) == []
    assert tick(10_000, True) == []
    [release] = tick(11_000, True)
    assert release["action"] == "release" and release["agent"] == "billing"
    assert release["reason"] == "on probation after 10 s in quarantine"
    # Released, then quarantined again: a new probation.
    assert tick(12_000, False) == []
    assert tick(13_000, True) == []
    assert tick(22_000, True) == []
    assert [a["action"] for a in tick(23_000, True)] == ["release"]
