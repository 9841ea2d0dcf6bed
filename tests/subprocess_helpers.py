"""Running a command in a subprocess with a timeout that ends everything it started (the tests launch
torchrun, train.py and benchmark scripts that start processes of their own)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


def run_command(cmd: list[str], timeout: float, cwd: Path | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` with its output captured. Past ``timeout`` seconds every process it started is killed and
    the run fails with its output so far. (torchrun starts each worker in a session of its own: killing
    torchrun's process group alone leaves the workers holding the output pipes open, and the test waits on them
    for ever.)"""
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in [*descendants(p.pid), p.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            out, err = p.communicate(timeout=60)
            raise AssertionError(f"{' '.join(cmd)} ran past {timeout:.0f} s and was killed:\n{out[-3000:]}\n"
                                 f"{err[-5000:]}") from None
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, whatever its session (read from /proc/<pid>/stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state; the name may hold spaces
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found
