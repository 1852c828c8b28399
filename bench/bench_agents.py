"""Agents for bench/mesh.exs and bench/wasm.exs."""

from typing import Any

from symbiont import Agent, on


class Sink(Agent):
    """Counts what arrives on ``bench.fanout``."""

    @on("bench.fanout")
    def take(self, _payload: Any) -> None:
        self.state["n"] = self.state.get("n", 0) + 1


class Counter(Agent):
    """What priv/wasm/counter.wat does, in Python (bench/wasm.exs compares the two): counts,
    publishes the count on ``count.out``, logs, and reports ``degraded`` at the third."""

    @on("bench.counter.python")
    def count(self, _payload: Any) -> None:
        n = self.state["n"] = self.state.get("n", 0) + 1
        self.publish("count.out", n)
        self.log.info("counted")
        if n == 3:
            self.health.degraded("third message")
