"""One agent slot (PROTOCOL.md §8): :class:`Slot` holds everything a host keeps for the
agent it runs in a slot, and the rule of its state across deliveries, which the host and
:class:`symbiont.testing.AgentHarness` both follow.

The rule (§8): after each delivery that its handler completed, the agent's state is taken
as a checkpoint, which the next ack carries; a delivery that fails (its handler raised, or
the state it left cannot be a checkpoint) puts the state back to the last checkpoint, so
the failed handler's changes are dropped. :meth:`Slot.commit` and :meth:`Slot.roll_back`
are that rule's one home.

Lifecycle
---------
A host makes a slot when it reads ``agent_start`` (:attr:`Phase.STARTING`: the agent is
made and its ``on_start`` runs, which may publish), marks it :attr:`Phase.RUNNING` once
the agent is ready, :attr:`Phase.STOPPING` when it runs ``on_stop``, and drops it when
that is done or when the start failed (:attr:`Phase.GONE`). A slot is in the host's table
(``Host._slots``) exactly from its start to its end.

Threads
-------
The dispatch thread makes, starts, stops and ends a slot, and writes its other fields.
Two are shared:

* :attr:`Slot.publish_ids`: the dispatch thread replaces the list at each delivery (one
  store: a thread of the agent's that publishes meanwhile sees the old pair or the new
  one, never half of each); whichever thread publishes takes the next id from it.
* :attr:`Slot.window`: its counts change under the host's credit lock, by whichever
  thread sends or reads a ``credit``; the dispatch thread or the watchdog drops it (to
  ``None``), under that lock too, once the slot's ``agent_stop`` is read.

A pong (the dispatch thread's, or the watchdog's while a dispatch runs long, never both
at once) reads :attr:`Slot.busy` and writes :attr:`Slot.busy_told`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import FrameTooLarge
from ._terms import encode_error, unpackb

if TYPE_CHECKING:  # pragma: no cover
    from ._agent import Agent

__all__ = ["Phase", "Slot", "checkpoint_of", "state_of"]


class Phase(enum.Enum):
    """Where a slot is in its life (see the module's "Lifecycle")."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    GONE = "gone"


def checkpoint_of(
    state: Any, pack: Callable[[Any], bytes], max_frame: int | None = None
) -> bytes | None:
    """``state`` as a checkpoint (§8): ``None`` for no state, else its msgpack bytes.

    Raises ``TypeError`` naming the place in ``state`` that cannot be encoded, and
    :class:`~symbiont.FrameTooLarge` when it would not fit in an ack of a frame of at
    most ``max_frame`` bytes (``None``: no limit).
    """
    if state is None:
        return None
    try:
        state_bin = pack(state)
    except (TypeError, ValueError, OverflowError) as exc:
        raise encode_error(state, "state", exc) from None
    if max_frame is not None and len(state_bin) > max_frame - 32:
        raise FrameTooLarge("the agent state", len(state_bin), max_frame)
    return state_bin


def state_of(checkpoint: bytes | None) -> Any:
    """The state a checkpoint holds (a fresh copy each time)."""
    return None if checkpoint is None else unpackb(checkpoint)


class Slot:
    """The agent of one slot and what its host keeps for it.

    Parameters
    ----------
    number:
        The slot (``agent_start``'s), 1..2^63-1.
    agent:
        The agent it runs.
    pack:
        What encodes its checkpoints (the dispatch thread's packer in a host).
    max_frame:
        The owner's ``max_frame``: a checkpoint must fit in an ack. ``None``: no limit.
    """

    __slots__ = (
        "agent",
        "busy",
        "busy_told",
        "checkpoint",
        "max_frame",
        "number",
        "pack",
        "phase",
        "publish_ids",
        "timeout_ms",
        "unacked",
        "window",
    )

    def __init__(
        self,
        number: int,
        agent: Agent,
        *,
        pack: Callable[[Any], bytes],
        max_frame: int | None = None,
    ) -> None:
        self.number = number
        self.agent = agent
        self.pack = pack
        self.max_frame = max_frame
        self.phase = Phase.STARTING
        #: The checkpoint after its last handled delivery (or its start): what the next
        #: ack carries, and what a failed delivery goes back to.
        self.checkpoint: bytes | None = None
        #: The last handled, not yet acked, seq; ``None`` when all are acked.
        self.unacked: int | None = None
        #: The id of its next publish, ``[seq, n]`` (§8.1): the delivery being handled
        #: and n from 0, or outside a handler the last one handled and n from -1 down.
        #: ``None`` once the slot is gone: the owner would drop what it publishes.
        self.publish_ids: list[int] | None = None
        #: Its ``handler_timeout_ms`` (§8), or ``None``.
        self.timeout_ms: int | None = None
        #: Its window (§8.2): ``[frames, bytes]`` sent and not given back yet, then
        #: ``[frames, bytes]`` of the window. ``None``: not counted (no window given, or
        #: its ``agent_stop`` has been read: the owner drops what it sends, uncounted).
        self.window: list[int] | None = None
        #: Seconds its deliveries have run in all, and the µs of that told in pongs
        #: (PROTOCOL.md §11.2).
        self.busy = 0.0
        self.busy_told = 0

    def __repr__(self) -> str:
        return f"<Slot {self.number} {self.phase.value} {self.agent.name!r}>"

    @property
    def running(self) -> bool:
        """Whether it takes deliveries (started, not stopping)."""
        return self.phase is Phase.RUNNING

    def take_checkpoint(self) -> bytes | None:
        """The agent's state now as a checkpoint; raises when it cannot be one."""
        return checkpoint_of(self.agent.state, self.pack, self.max_frame)

    def commit(self) -> None:
        """A delivery's handler is done: its state becomes the checkpoint. When the state
        cannot be one, the delivery failed: rolled back, and the error raised."""
        try:
            checkpoint = self.take_checkpoint()
        except BaseException:
            self.roll_back()
            raise
        self.checkpoint = checkpoint

    def roll_back(self) -> None:
        """A delivery failed: the agent's state goes back to the last checkpoint."""
        self.agent.state = state_of(self.checkpoint)

    def end(self) -> None:
        """The slot is gone: what its agent still publishes is dropped (§8)."""
        self.phase = Phase.GONE
        self.publish_ids = None
        self.checkpoint = None
        self.unacked = None
