"""Jobs in a child process: results come back, and a real crash, hang or error is named."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedrpc.service.runtimes.isolation import ChildFailed, run_isolated


def test_result_comes_back():
    assert run_isolated("json:dumps", {"b": [1, 2], "a": "é"}) == '{"b": [1, 2], "a": "\\u00e9"}'


def test_segfault_is_named():
    with pytest.raises(ChildFailed) as failure:
        run_isolated("ctypes:string_at", 0)
    assert failure.value.reason == "crashed (SIGSEGV)" and failure.value.crashed


def test_sigkill_is_named():
    with pytest.raises(ChildFailed, match=r"^crashed \(SIGKILL\)$"):
        run_isolated("signal:raise_signal", int(signal.SIGKILL))


def test_exception_is_a_failure_with_its_message():
    with pytest.raises(ChildFailed, match=r"^failed \(No module named 'no_such_module'\)$"):
        run_isolated("no_such_module:run", {})


def test_hang_times_out():
    with pytest.raises(ChildFailed, match=r"^timed out after 2 s$") as failure:
        run_isolated("time:sleep", 60, timeout=2)
    assert not failure.value.crashed


def _children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_child_of_a_killed_parent_stops():
    """An export or server killed with SIGKILL leaves no child working on for nobody."""
    parent = subprocess.Popen([sys.executable, "-c",
                               "from embedrpc.service.runtimes.isolation import run_isolated; "
                               "run_isolated('time:sleep', 120)"])
    deadline = time.monotonic() + 30
    while not (children := _children_of(parent.pid)):
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _running(children[0]):
        assert time.monotonic() < deadline, "the orphaned child kept running"
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has stopped; only its exit status is left
