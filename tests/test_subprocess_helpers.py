"""The tests' subprocess helper ends a run that hangs, workers in sessions of their own included
(as torchrun starts them), instead of waiting on their open output pipes for ever."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
from subprocess_helpers import run_command

HANGS = """
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
print("worker", worker.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_a_hanging_run_fails_and_its_detached_workers_die() -> None:
    start = time.monotonic()
    with pytest.raises(AssertionError, match="ran past 3 s") as info:
        run_command([sys.executable, "-c", HANGS], timeout=3)
    assert time.monotonic() - start < 60
    worker = int(re.search(r"worker (\d+)", str(info.value)).group(1))  # the output so far is in the error
    for _ in range(50):
        if not alive(worker):
            break
        time.sleep(0.1)
    assert not alive(worker)


def test_a_finished_run_returns_its_output() -> None:
    proc = run_command([sys.executable, "-c", "print('done')"], timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "done"
