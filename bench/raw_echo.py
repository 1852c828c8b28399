"""The baseline of bench/roundtrip.exs: the smallest Python {packet,4} echo over fds 3/4.

It reads a frame and writes it back unchanged: no decoding, no dispatch. Whatever Symbiont
adds on top of this (msgpack both ways, the host loop, the owner GenServer) is its cost.
"""

import os
import struct

reader = os.fdopen(3, "rb")
while True:
    header = reader.read(4)
    if len(header) < 4:
        break
    (size,) = struct.unpack(">I", header)
    os.write(4, header + reader.read(size))
