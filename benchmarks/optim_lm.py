"""Every optimizer name on the main job: tiny HOPE on Shakespeare, 200 steps, held-out loss and bits per byte.

    python benchmarks/optim_lm.py                          # all names of hope.optim.NAMES, 200 steps each
    python benchmarks/optim_lm.py --names adamw,m3 --steps 50
    python benchmarks/optim_lm.py --names sgd,assoc_momentum,dmgd --lr 1e-2   # another peak lr for all

Each run is ``python train.py --config configs/tiny.yaml --set optimizer=NAME --set max_steps=STEPS`` in a
subprocess (same data order, schedule and peak lr for every optimizer: the config's, 4e-4, unless ``--lr``);
the table is printed as markdown for ``docs/optimizers.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hope.optim import NAMES
from hope.training.config import load_run_config

REPO = Path(__file__).resolve().parents[1]


def run(name: str, steps: int, config: str, out: Path, lr: float) -> dict:
    """One train.py run with optimizer ``name``; its ``result.json`` plus the wall time."""
    sets = [f"optimizer={name}", f"max_steps={steps}", f"lr={lr}", f"out_dir={out}", "resume=none", "sample_tokens=0",
            "progress=false", "ckpt_every=0", "keep_last=1"]
    cmd = [sys.executable, "train.py", "--config", config, *[a for s in sets for a in ("--set", s)]]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "WANDB_MODE": "offline"})
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' / '.join(tail)}", "wall_s": wall}
    return {**json.loads((out / "result.json").read_text()), "wall_s": wall}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--names", default=",".join(NAMES), help="comma-separated hope.optim names")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--lr", type=float, default=None, help="peak lr for every optimizer (default: the config's)")
    args = p.parse_args(argv)
    lr = args.lr if args.lr is not None else load_run_config(args.config)[1].lr
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names.split(","):
            res = run(name, args.steps, args.config, Path(tmp) / name, lr)
            print(f"{name}: {res}", file=sys.stderr, flush=True)
            rows.append((name, res))
    print(f"\n{args.config}, {args.steps} steps, peak lr {lr:g} for every optimizer "
          f"(python benchmarks/optim_lm.py --names {args.names} --steps {args.steps} --lr {lr:g})\n")
    print("| optimizer | lr | held-out loss (nats/token) | held-out bits per byte | wall time |")
    print("|---|---|---|---|---|")
    for name, res in rows:
        if "error" in res:
            print(f"| `{name}` | {lr:g} | failed: {res['error']} | | {res['wall_s']:.0f} s |")
        else:
            print(f"| `{name}` | {lr:g} | {res['val_loss']:.4f} | {res['val_bpb']:.3f} | {res['wall_s']:.0f} s |")


if __name__ == "__main__":
    main()
