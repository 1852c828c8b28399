"""Symbiont's pytest plugin: the ``agent_harness`` fixture.

It is installed with the package (the ``pytest11`` entry point ``symbiont``), so every
pytest run where ``symbiont`` is installed has it, with nothing to import::

    from billing import Billing

    def test_billing_keeps_a_running_total(agent_harness):
        billing = agent_harness(Billing, config={"currency": "EUR"})
        billing.event("orders.created", {"id": 1, "amount": 9.5})
        assert billing.state["total"] == 9.5

Where the package is on ``PYTHONPATH`` without being installed, load it by name:
``pytest -p symbiont.pytest_plugin``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, TypeVar

import pytest

from ._agent import Agent
from .testing import AgentHarness

__all__ = ["HarnessFactory", "agent_harness"]

_A = TypeVar("_A", bound=Agent)


class HarnessFactory(Protocol):
    """What the ``agent_harness`` fixture gives: :class:`~symbiont.testing.AgentHarness`'s
    constructor, whose harnesses are closed when the test ends."""

    def __call__(
        self,
        agent_class: type[_A],
        *,
        name: str = ...,
        config: Mapping[str, Any] | None = ...,
        state: Any = ...,
        max_topics: int | None = ...,
        handler_timeout: float | None = ...,
        wasm: str | os.PathLike[str] | None = ...,
        limits: Mapping[str, Any] | None = ...,
    ) -> AgentHarness[_A]:
        """An :class:`~symbiont.testing.AgentHarness` of ``agent_class``."""
        ...


@pytest.fixture
def agent_harness() -> Iterator[HarnessFactory]:
    """A factory of :class:`~symbiont.testing.AgentHarness`:
    ``agent_harness(MyAgent, config=..., state=...)`` drives ``MyAgent`` as its owner
    would, without a BEAM. Every harness it made is closed when the test ends (the event
    loop of its ``async def`` methods stopped, their tasks cancelled)."""
    made: list[AgentHarness[Any]] = []

    def make(agent_class: type[_A], **options: Any) -> AgentHarness[_A]:
        harness = AgentHarness(agent_class, **options)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()
