"""The host as an OS process (PROTOCOL.md §1.5, docs/SECURITY.md): it dies with its owner,
leads a process group that its children die with, and flushes what it holds before it
exits."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from ._transport import Transport

__all__ = [
    "_die_with_parent",
    "_exit_after_flush",
    "_exit_with_children",
    "_group_members",
    "_lead_a_process_group",
]


def _exit_after_flush(transport: Transport, exit: Callable[[int], Any], status: int) -> Any:
    """``exit(status)`` once the writes the transport held are out (the owner may be gone)."""
    with contextlib.suppress(OSError):
        transport.flush()
    return exit(status)


def _die_with_parent() -> None:
    """PROTOCOL.md §1.5: never outlive the owner, even stuck in native code."""
    if not sys.platform.startswith("linux"):
        return
    ppid = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    current = os.getppid()
    if current != ppid or current == 1:
        os._exit(1)  # the parent died before prctl took effect


def _lead_a_process_group() -> None:
    """Children of the host die with it (SECURITY.md): it leads a process group of its
    own, which the owner kills once the host is gone, and which the host kills itself
    on its way out (:func:`_exit_with_children`)."""
    try:
        os.setsid()  # a session of its own also keeps the terminal's Ctrl-C away from it
    except OSError:
        pass  # already a group leader: started by something other than an owner
    # A forked child must not hold the protocol's pipes: the owner would not see the
    # host's end of stream while it lives (subprocesses do not: the fds are CLOEXEC).
    os.register_at_fork(after_in_child=_drop_protocol_fds)


def _drop_protocol_fds() -> None:
    for fd in (3, 4):
        with contextlib.suppress(OSError):
            os.close(fd)


def _group_members() -> list[int]:
    """The other processes of this host's process group (Linux: read from /proc)."""
    me = os.getpid()
    if os.getpgrp() != me:
        return []
    members = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[2]) == me:
                members.append(int(entry.name))
    return members


def _exit_with_children(status: int) -> NoReturn:
    """``os._exit(status)``, after SIGKILL to the rest of the host's process group."""
    for pid in _group_members():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    os._exit(status)
