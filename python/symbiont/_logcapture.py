"""Log frames (PROTOCOL.md §7): fds 1 and 2 and the ``logging`` module, turned into frames.

Output of user and native code must neither corrupt the protocol stream nor get lost, so
fds 1 and 2 become pipes read by daemon threads that send one log frame per line.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
from collections.abc import Callable

__all__ = ["LogFrameHandler", "capture_output", "install_log_handler", "level_name"]

SendLog = Callable[[str, str], None]
_MAX_LINE = 64 * 1024


def level_name(levelno: int) -> str:
    """The protocol level of a :mod:`logging` level number."""
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


class LogFrameHandler(logging.Handler):
    """A :class:`logging.Handler` that sends one log frame per record."""

    def __init__(self, send: SendLog, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._send = send
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        """Format ``record`` (with its exception text) and send it."""
        # Reporting a failure would write to stderr, which loops back here.
        with contextlib.suppress(Exception):
            self._send(level_name(record.levelno), self.format(record))


def install_log_handler(send: SendLog) -> LogFrameHandler:
    """Send the root logger's records as log frames; the root level becomes INFO."""
    handler = LogFrameHandler(send)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def _pump(read_fd: int, level: str, send: SendLog) -> None:
    pending = b""
    while True:
        try:
            data = os.read(read_fd, 65536)
        except InterruptedError:
            continue
        if not data:
            break
        pending += data
        *lines, pending = pending.split(b"\n")
        while len(pending) > _MAX_LINE:
            lines.append(pending[:_MAX_LINE])
            pending = pending[_MAX_LINE:]
        for line in lines:
            _send_quietly(send, level, line)
    if pending:
        _send_quietly(send, level, pending)


def _send_quietly(send: SendLog, level: str, line: bytes) -> None:
    # Keep draining the pipe whatever happens, so that writers never block.
    with contextlib.suppress(Exception):
        send(level, line.rstrip(b"\r").decode("utf-8", "replace"))


def capture_output(send: SendLog) -> None:
    """Redirect fds 1 and 2 into log frames (``info`` and ``warning``), line by line."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    for fd, level, label in ((1, "info", "stdout"), (2, "warning", "stderr")):
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, fd)
        os.close(write_fd)
        threading.Thread(
            target=_pump, args=(read_fd, level, send), name=f"symbiont-{label}", daemon=True
        ).start()
    sys.stdout = _line_buffered(sys.stdout, 1)
    sys.stderr = _line_buffered(sys.stderr, 2)


def _line_buffered(stream: io.TextIOBase | None, fd: int) -> io.TextIOBase:
    if isinstance(stream, io.TextIOWrapper):
        try:
            stream.reconfigure(line_buffering=True)
            return stream
        except (ValueError, OSError):
            pass
    # fd was closed when Python started (sys.stdout is None): give it a real stream now.
    return open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
