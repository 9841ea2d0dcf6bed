"""Helpers for the training tests: micro model/training settings (d <= 64, T <= 64), a generated corpus,
and running train.py in a subprocess (optionally under torchrun)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from subprocess_helpers import run_command

REPO = Path(__file__).resolve().parents[2]
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
WORDS = ("the king queen lord lady night day love death sword crown heart fair sweet gentle noble "
         "speak come go see hear know thou thee thy my mine our your what why how when where now").split()

# a micro HOPE (self-modifying Titans + a 2-level CMS): every code path of the full model, in milliseconds
MICRO_MODEL = ["model.preset=tiny", "model.dim=32", "model.n_layers=1", "model.n_heads=2",
               "model.cms_hidden=32",
               "model.cms_chunk_sizes=[8, null]", "model.chunk_memory=4", "model.chunk_other=8"]
MICRO_TRAIN = ["seq_len=32", "batch_size=2", "warmup_steps=0", "lr=3e-3", "progress=false", "log_every=1",
               "val_tokens=128", "sample_tokens=0", "keep_last=10"]


def make_documents(n: int, seed: int = 0, words: tuple[int, int] = (20, 80)) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(*words))).capitalize() + "."
            for _ in range(n)]


def write_corpus(path: Path, n: int = 60, seed: int = 0) -> Path:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in make_documents(n, seed)))
    return path


def train_args(corpus: Path, out_dir: Path, *extra: str) -> list[str]:
    sets = [*MICRO_MODEL, *MICRO_TRAIN, f"data={corpus}", f"out_dir={out_dir}",
            f"cache_dir={out_dir.parent / 'cache'}", *extra]
    return [a for s in sets for a in ("--set", s)]


def child_env() -> dict[str, str]:
    """The environment of the scripts the tests run: this one, offline, one thread per process."""
    return {**os.environ, **OFFLINE, "OMP_NUM_THREADS": "1"}


def run_train(args: list[str], torchrun: int = 0, timeout: float = 240,
              check: bool = True) -> subprocess.CompletedProcess:
    """Run train.py in a subprocess (under torchrun with ``torchrun`` processes when > 0)."""
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={torchrun}",
               "--standalone", "train.py", *args]
    else:
        cmd = [sys.executable, "train.py", *args]
    proc = run_command(cmd, timeout, cwd=REPO, env=child_env())
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


def losses(out_dir: Path) -> dict[int, float]:
    """step -> training loss from a run's metrics.jsonl."""
    recs = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line]
    return {r["step"]: r["loss"] for r in recs if "loss" in r}
