"""The frame reader on its own: frames split anywhere, many a read, the buffer let go."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from symbiont._errors import ProtocolError
from symbiont._framing import FrameReader
from symbiont._terms import Atom, packb
from symbiont._transport import Transport


class ChunkedTransport(Transport):
    """Hands out ``data`` in reads of ``chunk`` bytes at most."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data = data
        self.chunk = chunk
        self.pos = 0

    def read(self, size: int) -> bytes:
        n = min(size, self.chunk)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def wait_readable(self, timeout: float) -> bool:
        return self.pos < len(self.data)


class Eof(Exception):
    pass


def _eof() -> None:
    raise Eof


def frame(*fields: Any) -> bytes:
    payload = packb(list(fields))
    return struct.pack(">I", len(payload)) + payload


FRAMES = [
    ["cast", "m", "f", [1]],
    ["event", 1, 2, "t", b"\x01" * 300],
    ["call", 7, "m", "f", [(Atom("ok"), "é" * 1000)]],
    ["cancel", 7],
]


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_frames_split_anywhere_come_out_whole_and_in_order(chunk: int) -> None:
    data = b"".join(frame(*f) for f in FRAMES) * 3
    reader = FrameReader(ChunkedTransport(data, chunk), on_eof=_eof)
    assert [reader.next_frame() for _ in range(len(FRAMES) * 3)] == FRAMES * 3
    # Everything read was parsed, and nothing of it is kept.
    assert len(reader._buf) == 0
    with pytest.raises(Eof):
        reader.next_frame()


def test_read_available_takes_every_complete_frame_and_keeps_the_partial_one() -> None:
    data = frame(*FRAMES[0]) + frame(*FRAMES[1]) + frame(*FRAMES[2])[:10]
    reader = FrameReader(ChunkedTransport(data, 1 << 20), on_eof=_eof)
    assert reader.read_available(fill=True) == FRAMES[:2]
    assert reader.read_available(fill=False) == []


def test_over_the_limit_and_undecodable_payloads_are_protocol_errors() -> None:
    reader = FrameReader(ChunkedTransport(struct.pack(">I", 1000), 64), on_eof=_eof)
    reader.limit = 999
    with pytest.raises(ProtocolError, match="over the limit"):
        reader.next_frame()
    bad = struct.pack(">I", 2) + b"\xc1\x00"
    reader = FrameReader(ChunkedTransport(frame("cast") + bad, 64), on_eof=_eof)
    assert reader.next_frame() == ["cast"]
    with pytest.raises(ProtocolError, match="does not decode"):
        reader.next_frame()
    not_a_frame = packb({"a": 1})
    reader = FrameReader(
        ChunkedTransport(struct.pack(">I", len(not_a_frame)) + not_a_frame, 64), on_eof=_eof
    )
    with pytest.raises(ProtocolError, match="not an array led by a kind"):
        reader.next_frame()
