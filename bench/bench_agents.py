"""Agents for bench/mesh.exs."""

from typing import Any

from symbiont import Agent, on


class Sink(Agent):
    """Counts what arrives on ``bench.fanout``."""

    @on("bench.fanout")
    def take(self, _payload: Any) -> None:
        self.state["n"] = self.state.get("n", 0) + 1
