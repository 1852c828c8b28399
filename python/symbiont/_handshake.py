"""The handshake of a host (PROTOCOL.md §3): the owner's ``init``, checked and applied, and
the host's ``ready``.

A function of :class:`~symbiont._host.Host`, which binds it as its method.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from typing import TYPE_CHECKING, Any

from . import _blackbox
from ._errors import ProtocolError
from ._frame_checks import MAX_U32, _bad, _window
from ._framing import DEFAULT_MAX_FRAME
from ._logcapture import OutputLimiter
from ._terms import packb

if TYPE_CHECKING:  # pragma: no cover
    from ._host import Host

__all__ = ["PROTOCOL_VERSION", "_handshake"]

PROTOCOL_VERSION = 2

_logger = logging.getLogger("symbiont.host")


def _handshake(self: Host) -> None:
    frame = self.reader.next_frame()
    assert frame is not None
    if frame[0] != "init":
        raise ProtocolError(f"expected an init frame first, got {frame[0]!r}")
    if len(frame) != 3 or type(frame[1]) is not int or type(frame[2]) is not dict:
        raise _bad(frame, 'expected ["init", version, options]')
    _, version, options = frame
    if version != PROTOCOL_VERSION:
        self._fatal(
            ValueError(
                f"protocol version mismatch: the owner speaks {version}, "
                f"this host speaks {PROTOCOL_VERSION}"
            )
        )
    name = options.get("name", self.name)
    self.node = options.get("node") if type(options.get("node")) is str else None
    max_frame = options.get("max_frame", DEFAULT_MAX_FRAME)
    python_path = options.get("python_path") or []
    if type(name) is not str:
        raise _bad(frame, "name must be a str")
    if type(max_frame) is not int or not 64 <= max_frame <= MAX_U32:
        raise _bad(frame, "max_frame must be an int in 64..2^32-1")
    if type(python_path) is not list or not all(type(p) is str for p in python_path):
        raise _bad(frame, "python_path must be a list of str")
    output_limit = options.get("output_limit")
    if output_limit is not None:
        if type(output_limit) is not dict:
            raise _bad(frame, "output_limit must be a map")
        try:
            (self.output or OutputLimiter(lambda level, text: None)).configure(output_limit)
        except ValueError as exc:
            raise _bad(frame, str(exc)) from None
    if self.output is not None:
        self.output.name = name
    window = options.get("window")
    if window is not None and _window(window) is None:
        raise _bad(frame, 'window must be {"frames": int, "bytes": int}, each in 1..2^63-1')
    box_path = options.get("blackbox")
    if box_path is not None and (type(box_path) is not str or not box_path):
        raise _bad(frame, "blackbox must be a non-empty str (a path)")
    if options.get("agent") is not None:
        self._fatal(
            ValueError(
                "an agent in init is protocol version 1; since version 2 agents are "
                "started with agent_start frames"
            )
        )
    self.name = name
    self.peer_max = max_frame
    self.reader.limit = max_frame
    # Whether the owner takes health frames (§8.3); an owner that does not would take
    # one for a protocol error, so agents' reports are dropped then.
    self._owner_reports = options.get("health") is True
    # Whether it takes log frames with a record's fields (§7); an older owner would
    # take their fourth element for a protocol error, so they go without then.
    self._log_fields = options.get("log_fields") is True
    # Whether the owner wants each slot's busy time with its pongs (§11.2).
    if options.get("busy") is True:
        self._busy = True
    if window is not None:
        self._window = [0, 0, *_window(window)]  # type: ignore[misc]
    sys.path[0:0] = [p for p in python_path if p not in sys.path]
    info: dict[str, Any] = {
        "protocol": PROTOCOL_VERSION,
        "pid": os.getpid(),
        "runtime": f"{platform.python_implementation()} {platform.python_version()}",
        "max_frame": max_frame,
        "heartbeat": True,
        "credit": True,
    }
    if box_path is not None:
        try:
            self._box = _blackbox.create(box_path)
            self._box_path = box_path
            info["blackbox"] = True
        except OSError as exc:  # the owner charges crashes without it (§11.1)
            _logger.warning("no flight recorder at %s: %s", box_path, exc)
    self.reader.on_idle = self._flush_acks
    self._write_frame(packb(["ready", PROTOCOL_VERSION, info]))
    self.ready = True
    queued, self._before_ready = self._before_ready, []
    for data in queued:
        self._write_frame(data)
