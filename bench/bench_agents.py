"""Agents for bench/mesh.exs, bench/wasm.exs and bench/heal.exs."""

import os
import signal
import time
from pathlib import Path
from typing import Any

from symbiont import Agent, on
from symbiont._terms import unpackb


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


class Mortal(Agent):
    """bench/heal.exs: consumes ``config["in"]``. ``{"die": path}`` kills its own host with
    SIGKILL the first time (the file at ``path`` remembers it across the restart, and holds
    the wall-clock time of the kill in ns), ``{"ping":
    n}`` publishes ``n`` on ``config["out"]``; with ``config["crash"]`` every event kills it."""

    def subscriptions(self) -> list[str]:
        """The topic named in the config."""
        return [self.config["in"]]

    def handle_event(self, topic: str, payload: bytes) -> None:
        """Die, answer, or crash, as the event and the config say."""
        value: Any = unpackb(payload)
        if self.config.get("crash"):
            os._exit(3)
        if "die" in value:
            marker = Path(value["die"])
            if not marker.exists():
                marker.write_text(str(time.time_ns()))  # the moment of the fault
                os.kill(os.getpid(), signal.SIGKILL)
            return
        self.publish(self.config["out"], value["ping"])


# What Leaky agents keep, for as long as their process lives.
_leaked: list[bytes] = []


class Leaky(Agent):
    """bench/heal.exs: consumes ``config["in"]`` and keeps ``config["mb"]`` MB more of
    memory for each event (written, so that it is resident): a leak."""

    def subscriptions(self) -> list[str]:
        """The topic named in the config."""
        return [self.config["in"]]

    def handle_event(self, topic: str, payload: bytes) -> None:
        """Leak a little more."""
        _leaked.append(b"x" * int(self.config.get("mb", 2) * (1 << 20)))


class Tally(Agent):
    """bench/durable.exs: counts the events on ``config["in"]`` in its state."""

    def subscriptions(self) -> list[str]:
        """The topic named in the config."""
        return [self.config["in"]]

    def handle_event(self, topic: str, payload: bytes) -> None:
        """Count it."""
        self.state["n"] = self.state.get("n", 0) + 1
