"""Exact resume: SIGKILL a run at a random step, restart it, and get the uninterrupted loss trajectory."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file
from training_helpers import REPO, child_env, losses, run_train, train_args

STEPS = 8


def _last_step(metrics: Path) -> int:
    if not metrics.exists():
        return 0
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.endswith("}")]
    return max(steps, default=0)


def test_sigkill_at_a_random_step_then_resume_is_bitwise_exact(tmp_path: Path, corpus: Path) -> None:
    extra = (f"max_steps={STEPS}", "ckpt_every=1", "keep_last=2", "deterministic=true", "eval_every=0")
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    run_train(train_args(corpus, ref, *extra))

    kill_after = random.randint(2, STEPS - 2)
    print(f"killing after step {kill_after}")  # shown on failure
    env = child_env()
    cmd = [sys.executable, "train.py", *train_args(corpus, killed, *extra)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    metrics = killed / "metrics.jsonl"
    while _last_step(metrics) < kill_after and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert _last_step(killed / "metrics.jsonl") < STEPS

    run_train(train_args(corpus, killed, *extra))  # resumes from the latest complete checkpoint
    assert losses(killed) == losses(ref)  # bitwise: every step, same float
    a = load_file(str(ref / "checkpoints" / f"step_{STEPS:08d}" / "model.safetensors"))
    b = load_file(str(killed / "checkpoints" / f"step_{STEPS:08d}" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
