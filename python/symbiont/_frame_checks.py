"""The ranges of PROTOCOL.md §9 that a frame's fields must be in, and the error for a frame
that breaks one: the checks every part of the host runs on what the owner sends."""

from __future__ import annotations

from typing import Any

from ._errors import ProtocolError

__all__ = ["MAX_INT", "MAX_U32", "_bad", "_is_id", "_is_seq", "_window"]

#: PROTOCOL.md §9: ids, seqs, slots and counts fit in 63 bits; a frame size or a period in
#: milliseconds in 32.
MAX_INT = (1 << 63) - 1
MAX_U32 = (1 << 32) - 1


def _window(value: Any) -> tuple[int, int] | None:
    """A window of PROTOCOL.md §8.2 as (frames, bytes), or None when it is not one."""
    if type(value) is not dict:
        return None
    frames, size = value.get("frames"), value.get("bytes")
    if not (type(frames) is int and type(size) is int and _is_seq(frames) and _is_seq(size)):
        return None
    return frames, size


def _is_id(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_INT


def _is_seq(value: Any) -> bool:
    return type(value) is int and 0 < value <= MAX_INT


def _bad(frame: list[Any], rule: str) -> ProtocolError:
    return ProtocolError(f"malformed {frame[0]!r} frame ({rule}): {frame!r:.300}")
