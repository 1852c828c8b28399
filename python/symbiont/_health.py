"""An agent's health reports (PROTOCOL.md §8.3): :class:`Health`, ``self.health`` of an
agent, and what a report may hold (the bounds of ``contract.json``, shared with the
owner's ``Symbiont.Health``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from . import _contract
from ._errors import wire_text

if TYPE_CHECKING:  # pragma: no cover
    from ._agent import Agent

__all__ = [
    "HEALTH_METRICS",
    "HEALTH_METRIC_NAME_BYTES",
    "HEALTH_METRIC_TEXT_BYTES",
    "HEALTH_REASON_BYTES",
    "Health",
]

#: What a health report may hold (PROTOCOL.md §8.3, ``Symbiont.Health``): a reason of at
#: most this many UTF-8 bytes (a longer one is cut), at most this many metrics, whose
#: names are at most this many bytes and whose str values at most this many.
HEALTH_REASON_BYTES = _contract.HEALTH_REPORT["reason_bytes"]
HEALTH_METRICS = _contract.HEALTH_REPORT["metrics"]
HEALTH_METRIC_NAME_BYTES = _contract.HEALTH_REPORT["metric_name_bytes"]
HEALTH_METRIC_TEXT_BYTES = _contract.HEALTH_REPORT["metric_text_bytes"]
_HEALTH_KINDS = _contract.AGENT_HEALTH_KINDS


class Health:
    """An agent's health reports (``self.health``), which its owner publishes on
    ``symbiont.health``.

    A report goes to the owner in a frame of its own (PROTOCOL.md §8.3): a kind, a reason
    and metrics. The owner publishes it as the map ``{"kind", "agent", "node", "reason",
    "metrics", "by": "agent", "id", "version"}``, naming the agent that sent it: an agent
    speaks only for itself. Example::

        self.health.degraded("payment provider slow", p99_ms=900)
        self.health.ok()

    A reason longer than :data:`HEALTH_REASON_BYTES` is cut (it then ends with
    ``" [truncated]"``); metrics are at most :data:`HEALTH_METRICS`, named by at most
    :data:`HEALTH_METRIC_NAME_BYTES` bytes, each ``None``, a bool, a finite number or a
    str of at most :data:`HEALTH_METRIC_TEXT_BYTES` bytes (else ``ValueError`` or
    ``TypeError`` naming it).
    """

    TOPIC = "symbiont.health"

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def report(self, kind: str, reason: str = "", **metrics: Any) -> None:
        """Report health of ``kind``: healthy, degraded, overloaded or failing."""
        if kind not in _HEALTH_KINDS:
            raise ValueError(
                f"health kind must be healthy, degraded, overloaded or failing, got {kind!r}"
            )
        if not isinstance(reason, str):
            raise TypeError(f"health reason must be a str, got {type(reason).__name__}")
        # Lone surrogates (a str may hold them, UTF-8 cannot) become escapes, not a failure.
        metrics = {
            wire_text(k): wire_text(v) if isinstance(v, str) else v for k, v in metrics.items()
        }
        _check_metrics(metrics)
        self._agent._report_health(kind, _cut(wire_text(reason), HEALTH_REASON_BYTES), metrics)

    def ok(self, reason: str = "", **metrics: Any) -> None:
        """Report that the agent is healthy (again)."""
        self.report("healthy", reason, **metrics)

    def degraded(self, reason: str, **metrics: Any) -> None:
        """Report that the agent works, but worse than it should."""
        self.report("degraded", reason, **metrics)

    def overloaded(self, reason: str = "", **metrics: Any) -> None:
        """Report that the agent cannot keep up."""
        self.report("overloaded", reason, **metrics)

    def failing(self, reason: str, **metrics: Any) -> None:
        """Report that the agent is failing at its job."""
        self.report("failing", reason, **metrics)


def _cut(text: str, most: int) -> str:
    """``text`` within ``most`` UTF-8 bytes, cut at a character and marked when cut."""
    data = text.encode("utf-8")
    if len(data) <= most:
        return text
    suffix = " [truncated]"
    return data[: most - len(suffix)].decode("utf-8", "ignore") + suffix


def _check_metrics(metrics: dict[str, Any]) -> None:
    if len(metrics) > HEALTH_METRICS:
        raise ValueError(
            f"a health report has at most {HEALTH_METRICS} metrics, got {len(metrics)}"
        )
    for name, value in metrics.items():
        if len(name.encode()) > HEALTH_METRIC_NAME_BYTES:
            raise ValueError(
                f"health metric name {name[:32]!r}... is over {HEALTH_METRIC_NAME_BYTES} bytes"
            )
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int):
            if not -(1 << 63) <= value < 1 << 64:
                raise ValueError(f"health metric {name!r} = {value} is out of -2^63..2^64-1")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"health metric {name!r} = {value!r} is not a finite number")
        elif isinstance(value, str):
            if len(value.encode()) > HEALTH_METRIC_TEXT_BYTES:
                raise ValueError(
                    f"health metric {name!r} is a str of over {HEALTH_METRIC_TEXT_BYTES} bytes"
                )
        else:
            raise TypeError(
                f"health metric {name!r} must be None, a bool, a number or a str, "
                f"got {type(value).__name__}"
            )
