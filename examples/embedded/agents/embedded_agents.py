"""The agents of the embedded example: an order is priced, then billed."""

from typing import Any

from symbiont import Agent, on


class Orders(Agent):
    """Takes ``shop.order`` and passes each order on, with its total, to ``shop.priced``."""

    @on("shop.order")
    def order(self, payload: Any) -> None:
        """Price it."""
        total = sum(item["price"] * item["qty"] for item in payload["items"])
        self.publish("shop.priced", {"id": payload["id"], "total": total})


class Billing(Agent):
    """Bills each priced order once, and says so on ``shop.billed``."""

    @on("shop.priced")
    def priced(self, payload: Any) -> None:
        """Bill it."""
        self.state["billed"] = self.state.get("billed", 0) + payload["total"]
        self.publish("shop.billed", {"id": payload["id"], "billed": self.state["billed"]})
