"""The host dies with its parent even when its fd 3 stays open (PROTOCOL.md §1.5)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from conftest import PYTHON_SRC, HostProcess, pid_gone, wait_until

INTERMEDIATE = """
import os, sys
sys.path.insert(0, sys.argv[3])
from conftest import spawn_host
proc = spawn_host(int(sys.argv[1]), int(sys.argv[2]), stdout=subprocess.DEVNULL)
print(proc.pid, flush=True)
sys.stdin.read()  # parks until killed
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_host_dies_with_its_parent() -> None:
    owner = HostProcess.__new__(HostProcess)  # reuse the frame helpers, not the spawning
    to_host_r, owner.to_host = os.pipe()
    owner.from_host, from_host_w = os.pipe()
    owner._buf = bytearray()
    owner.logs = []
    owner._next_id = 0
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess\n" + INTERMEDIATE,
            str(to_host_r),
            str(from_host_w),
            tests_dir,
        ],
        pass_fds=(to_host_r, from_host_w),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(PYTHON_SRC)},
    )
    try:
        os.close(to_host_r)
        os.close(from_host_w)
        assert parent.stdout is not None
        host_pid = int(parent.stdout.readline())
        ready = owner.init()  # prctl happened before the host read anything
        assert ready[2]["pid"] == host_pid
        # The test still holds the write end of the host's fd 3: no EOF, only the signal.
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        assert wait_until(lambda: pid_gone(host_pid), timeout=5), "host outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        os.close(owner.to_host)
        os.close(owner.from_host)
