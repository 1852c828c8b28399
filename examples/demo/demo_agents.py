"""The demo system of ``make run``: orders -> billing -> notifier.

``Orders`` creates an order every second, ``Billing`` charges it and keeps a running total
in its checkpointed state, ``Notifier`` tells the world. Kill any of their hosts
(``kill -9 <os pid>`` from ``Symbiont.status()``) and watch it come back with its state.
"""

from __future__ import annotations

import random
from typing import Any

from symbiont import Agent, every, on


class Orders(Agent):
    """Creates an order every second on ``orders.created``."""

    @every(1.0)
    def create(self) -> None:
        order_id = self.state.get("next_id", 1)
        self.state["next_id"] = order_id + 1
        amount = round(random.uniform(5, 100), 2)
        self.publish("orders.created", {"id": order_id, "amount": amount})
        print(f"order {order_id} created: {amount:.2f}")


class Billing(Agent):
    """Charges each order and publishes ``billing.charged`` with the running total."""

    @on("orders.created")
    def charge(self, order: dict[str, Any]) -> None:
        self.state["count"] = self.state.get("count", 0) + 1
        self.state["total"] = round(self.state.get("total", 0.0) + order["amount"], 2)
        self.publish(
            "billing.charged",
            {
                "order": order["id"],
                "amount": order["amount"],
                "total": self.state["total"],
                "currency": self.config.get("currency", "EUR"),
            },
        )


class Notifier(Agent):
    """Logs every charge."""

    @on("billing.charged")
    def notify(self, charge: dict[str, Any]) -> None:
        self.log.info(
            "order %s charged %.2f %s (running total %.2f)",
            charge["order"],
            charge["amount"],
            charge["currency"],
            charge["total"],
        )
