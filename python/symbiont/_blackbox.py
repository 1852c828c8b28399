"""The host's flight recorder: whose code the process runs now (PROTOCOL.md §11.1).

32 bytes in a file the owner named in ``init``, mapped in memory: four little-endian
unsigned 64-bit words, ``pid`` (this process), then the **entry**: ``slot``, ``seq`` and
``kind`` (:data:`IDLE`, :data:`DELIVERY`, :data:`START` or :data:`STOP`). The main thread
writes the entry as it enters and leaves an agent's code (a delivery, an ``agent_start``,
an ``agent_stop``), the kind last; a store into a shared mapping costs about a hundred
nanoseconds and reaches the page cache at once, so the owner reads the last one even
after the process died of SIGKILL, a segfault or the OOM killer, or while it is frozen.
That is how a crash of a host shared by several agents is charged to the agent whose
code was running, and to it alone.
"""

from __future__ import annotations

import mmap
import os
import struct

#: The size of the recorder, in bytes, and where its entry starts.
SIZE, ENTRY = 32, 8
#: What the main thread is doing: no agent's code, a delivery (an event or a tick), an
#: agent's start (``__init__``, ``on_start``, a Wasm module's instantiation and
#: ``symbiont_init``) or its stop (``on_stop``).
IDLE, DELIVERY, START, STOP = 0, 1, 2, 3

_ENTRY = struct.Struct("<QQQ")
#: ``record(box, ENTRY, slot, seq, kind)``: what runs now (one store, the kind last). The
#: hot path (a delivery) calls it directly.
record = _ENTRY.pack_into
#: The entry of a recorder with no agent's code running.
IDLE_ENTRY = _ENTRY.pack(0, 0, IDLE)


def entry(kind: int, slot: int, seq: int = 0) -> bytes:
    """An entry, to put back with ``box[ENTRY:SIZE] = entry``."""
    return _ENTRY.pack(slot, seq, kind)


def create(path: str) -> mmap.mmap:
    """Create the recorder at ``path``: a new file (never one that exists, nor through a
    link), for this user alone, mapped; idle. Raises ``OSError`` when it cannot."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        os.ftruncate(fd, SIZE)
        box = mmap.mmap(fd, SIZE)
    finally:
        os.close(fd)  # the mapping keeps the file
    struct.pack_into("<Q", box, 0, os.getpid())
    return box
