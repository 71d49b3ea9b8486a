"""Run one job in a child Python process, so that a native crash ends the child, not us.

Native libraries (llama.cpp, onnxruntime) can die on a host they were never tested on: a kernel
that segfaults on one CPU kind kills whatever process called it. Work that may meet such a
kernel for the first time on a host (parity at export, the self-check before serving) runs here:
the job is a function named `module:function` that takes a JSON-able payload and returns a
JSON-able result; a crash comes back as `ChildFailed` naming the signal.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

DEFAULT_TIMEOUT_S = 1800.0
_STDERR_TAIL_LINES = 20


class ChildFailed(Exception):
    """The child process crashed, hung or raised; `reason` is a short phrase for one line."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail

    @property
    def crashed(self) -> bool:
        return self.reason.startswith("crashed")


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_isolated(job: str, payload: dict, timeout: float = DEFAULT_TIMEOUT_S) -> dict:
    """Run `job` ("package.module:function") on `payload` in a fresh interpreter.

    Returns the function's result. Raises ChildFailed whose reason is `crashed (SIGSEGV)`,
    `timed out after N s`, or `failed (<the exception's message>)`.
    """
    with tempfile.TemporaryDirectory(prefix="embedrpc-child-") as scratch:
        request, result = Path(scratch) / "request.json", Path(scratch) / "result.json"
        request.write_text(json.dumps({"job": job, "payload": payload, "parent": os.getpid()}))
        try:
            done = subprocess.run([sys.executable, "-m", __name__, str(request), str(result)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ChildFailed(f"timed out after {timeout:.0f} s", _tail(exc.stderr)) from None
        stderr = _tail(done.stderr)
        if done.returncode < 0:
            raise ChildFailed(f"crashed ({signal_name(-done.returncode)})", stderr)
        if not result.is_file():
            raise ChildFailed(f"exited with status {done.returncode} and no result", stderr)
        answer = json.loads(result.read_text())
        if "error" in answer:
            raise ChildFailed(f"failed ({answer['error']})", answer.get("traceback", stderr))
        return answer["result"]


def _tail(stderr: bytes | None) -> str:
    lines = (stderr or b"").decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-_STDERR_TAIL_LINES:])


def _exit_with_parent(parent: int) -> None:
    """An orphaned child (its parent was SIGKILLed) stops instead of working on for nobody."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(70)

    threading.Thread(target=watch, daemon=True, name="embedrpc-parent-watch").start()


def _child(request_path: str, result_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    _exit_with_parent(request["parent"])
    module_name, function_name = request["job"].split(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        answer = {"result": function(request["payload"])}
    except Exception as exc:  # the parent reports it; a traceback helps whoever debugs it
        answer = {"error": str(exc) or type(exc).__name__, "traceback": traceback.format_exc()}
    staged = result_path + ".partial"
    Path(staged).write_text(json.dumps(answer))
    os.replace(staged, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(_child(*sys.argv[1:3]))
