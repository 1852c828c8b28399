"""The shop of ``make shop``: orders -> pricing (Wasm) -> billing -> notifications.

``Orders`` takes orders, with a rush now and then; ``pricing`` (``pricing.c``, a Wasm
agent) adds the price; ``Billing`` charges it, crashes now and then, and crash-loops
while its payment provider is out; ``Notifications`` sends the receipt and is too slow
for a rush. ``Release`` deploys pricing v2 after a
while, a version with a bug. The conductor heals what goes wrong: see README.md,
"The shop".
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from symbiont import Agent, every, on

CUSTOMERS = ("ada", "grace", "alan", "edsger", "barbara", "ken", "margaret", "linus")


class Orders(Agent):
    """Publishes new orders on ``orders.created``.

    Config: ``rate`` (orders a second, default 2), and a rush of ``rush_rate`` orders a
    second (default 6) for the first ``rush_for`` seconds (default 20) of every
    ``rush_every`` seconds (default 60), counted from the wall clock.
    """

    def on_start(self) -> None:
        """Start with no fraction of an order due."""
        self._due = 0.0

    @every(0.05)
    def take(self) -> None:
        """Take the orders due since the last tick."""
        c = self.config
        rush = time.time() % c.get("rush_every", 60) < c.get("rush_for", 20)
        rate = c.get("rush_rate", 6) if rush else c.get("rate", 2)
        # Fractions of an order carry over to the next tick (not checkpointed: a restart
        # loses less than one order's worth).
        due = self._due + rate * 0.05
        while due >= 1:
            due -= 1
            order_id = self.state.get("next_id", 1)
            self.state["next_id"] = order_id + 1
            order = {
                "id": order_id,
                "customer": random.choice(CUSTOMERS),
                "amount": round(random.uniform(5, 100), 2),
            }
            self.publish("orders.created", order)
        self._due = due


class Billing(Agent):
    """Charges each priced order and keeps the takings in its checkpointed state.

    Its payment library is flaky: charging an order kills the process with the chance
    ``crash_rate`` (default 0), and ``outage_crash_rate`` (default 0.5) while the payment
    provider is out: ``outage_for`` seconds (default 0: never) from second ``outage_at``
    of every ``outage_every`` seconds (default 35 of 60), by the wall clock. An order
    whose charge crashed is charged again by the restarted process, from the state of
    the last one acknowledged: nothing is lost or counted twice.
    """

    @on("orders.priced")
    def charge(self, order: dict[str, Any]) -> None:
        """Charge one order and pass it on."""
        c = self.config
        phase = time.time() % c.get("outage_every", 60) - c.get("outage_at", 35)
        out = 0 <= phase < c.get("outage_for", 0)
        if random.random() < (c.get("outage_crash_rate", 0.5) if out else c.get("crash_rate", 0)):
            os._exit(70)  # the payment library takes the process down with it
        self.state["orders"] = self.state.get("orders", 0) + 1
        self.state["takings"] = round(self.state.get("takings", 0.0) + order["price"], 2)
        self.publish("billing.charged", {**order, "takings": self.state["takings"]})


class Notifications(Agent):
    """Sends each customer a receipt; takes ``delay`` seconds over each (default 0.25),
    too slow for a rush: the conductor scales it out."""

    @on("billing.charged")
    def notify(self, charge: dict[str, Any]) -> None:
        """Send one receipt (a log line) and say so on ``notifications.sent``."""
        time.sleep(self.config.get("delay", 0.25))
        self.state["sent"] = self.state.get("sent", 0) + 1
        self.log.info(
            "receipt to %s: order %s, %.2f EUR",
            charge["customer"],
            charge["id"],
            charge["price"],
        )
        self.publish(
            "notifications.sent",
            {"id": charge["id"], "customer": charge["customer"], "price": charge["price"]},
        )


class Release(Agent):
    """The shop's release train: ``after_s`` seconds after it first started (default
    30), it deploys the Wasm module ``wasm`` as the new version of agent ``agent``, once
    (``Symbiont.deploy/2``: a canary, promoted or rolled back on its health)."""

    @every(1.0)
    def check(self) -> None:
        """Deploy once the time has come."""
        started = self.state.setdefault("started_at", time.time())
        if self.state.get("deployed") or time.time() - started < self.config.get("after_s", 30):
            return
        self.state["deployed"] = True
        agent, wasm = self.config["agent"], self.config["wasm"]
        result = self.call("Symbiont", "deploy", [agent, wasm], timeout=30)
        self.log.warning("deploying %s to %s: %s", agent, wasm, result)
