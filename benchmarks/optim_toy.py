"""Steps to a loss threshold on the paper's toy surface (arXiv Fig. 4) for the momentum memories.

    psi(r, theta) = r^2 + K (r - theta + A sin(W r))^2

a curved narrow valley (K sets the curvature ratio, A and W the bend) with its minimum psi = 0 at
r = theta = 0. The parameter is one 2-vector [r, theta], started at START. Each optimizer gets a grid of
learning rates (and memory step sizes for the delta rule); we report the best number of steps to reach
psi < THRESHOLD within MAX_STEPS, the configuration that achieved it, and the steps at a common
configuration (lr = 0.01, alpha = 0.9).

With raw gradient keys the delta rule's step eta must satisfy eta ||g||^2 < 1 + alpha, so those runs use
value_scale = 1 / eta: the write stays the gradient and only the decay eta g g^T is small (the form of
NeurIPS Eq. 22). "normalized key" runs use K = g / ||g||. DMGD's MLP sees the same raw keys and target
scale 1 / eta, so its own step (mlp_lr) must be far smaller than the linear part's.

Muon is n/a: a 2-vector is not a matrix (Newton-Schulz of a 1 x 2 row is g / ||g||, normalized GD, and
Muon itself sends vectors to AdamW).

Run:  python benchmarks/optim_toy.py   (CPU, one thread, about two minutes)
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections.abc import Callable

import torch

from hope.optim import DMGD, AssocMomentum

K, A, W = 10.0, 0.5, 2.0
START = (2.0, -1.0)
THRESHOLD = 1e-4
MAX_STEPS = 3000
LRS = (1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2)
MEM_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
RAW_MEM_LRS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)  # raw-gradient keys: eta ||g||^2 < 1 + alpha needs a small eta


def raw(kw: dict) -> dict:
    """Raw-gradient keys: target scale c = 1 / eta, so the write is the gradient itself (NeurIPS Eq. 22)."""
    return {**kw, "value_scale": 1.0 / kw["mem_lr"]}


def psi(p: torch.Tensor) -> torch.Tensor:
    r, theta = p[0], p[1]
    return r**2 + K * (r - theta + A * torch.sin(W * r)) ** 2


def steps_to_threshold(make: Callable[..., torch.optim.Optimizer], kwargs: dict) -> int | None:
    """Steps until psi < THRESHOLD (None: not within MAX_STEPS or diverged)."""
    p = torch.nn.Parameter(torch.tensor(START, dtype=torch.float64))
    opt = make([p], **kwargs)
    for step in range(MAX_STEPS + 1):
        opt.zero_grad()
        loss = psi(p)
        value = loss.item()
        if value < THRESHOLD:
            return step
        if not math.isfinite(value) or value > 1e8:
            return None
        loss.backward()
        opt.step()
    return None


def candidates() -> dict[str, tuple[dict, Callable[..., torch.optim.Optimizer], dict]]:
    """name -> (grid over kwargs, constructor, common-config kwargs)."""
    lr_grid = {"lr": LRS}
    delta_grid = {"lr": LRS, "mem_lr": MEM_LRS}
    raw_grid = {"lr": LRS, "mem_lr": RAW_MEM_LRS}
    return {
        "GD (no momentum)": (lr_grid, lambda ps, **kw: torch.optim.SGD(ps, **kw), {"lr": 0.01}),
        "momentum (dot, = SGD momentum)": (
            lr_grid, lambda ps, **kw: AssocMomentum(ps, momentum=0.9, **kw), {"lr": 0.01}),
        "delta momentum (l2, vector key)": (
            raw_grid, lambda ps, **kw: AssocMomentum(ps, momentum=0.9, objective="l2", **raw(kw)),
            {"lr": 0.01, "mem_lr": 1e-4}),
        "delta momentum (l2, normalized key)": (
            delta_grid, lambda ps, **kw: AssocMomentum(ps, momentum=0.9, objective="l2",
                                                       feature_map="normalize", **kw),
            {"lr": 0.01, "mem_lr": 0.3}),
        "delta momentum (l2, elementwise)": (
            raw_grid, lambda ps, **kw: AssocMomentum(ps, momentum=0.9, objective="l2", layout="elementwise",
                                                     **raw(kw)),
            {"lr": 0.01, "mem_lr": 1e-4}),
        "DMGD (dot, MLP h=8, silu)": (
            {"lr": LRS, "mlp_lr": (0.001, 0.01, 0.1)},
            lambda ps, **kw: DMGD(ps, momentum=0.9, hidden=8, **kw), {"lr": 0.01, "mlp_lr": 0.001}),
        "DMGD (l2, MLP h=8, silu, normalized key)": (
            {"lr": LRS, "mem_lr": MEM_LRS},
            lambda ps, **kw: DMGD(ps, momentum=0.9, hidden=8, objective="l2", feature_map="normalize", **kw),
            {"lr": 0.01, "mem_lr": 0.3}),
        "DMGD (l2, MLP h=8, silu, vector key)": (
            {"lr": (5e-3, 1e-2, 2e-2, 5e-2), "mem_lr": (3e-5, 1e-4, 3e-4), "mlp_lr": (1e-8, 1e-7, 1e-6)},
            lambda ps, **kw: DMGD(ps, momentum=0.9, hidden=8, objective="l2", **raw(kw)),
            {"lr": 0.01, "mem_lr": 1e-4, "mlp_lr": 1e-7}),
        "Adam (reference)": (lr_grid, lambda ps, **kw: torch.optim.Adam(ps, **kw), {"lr": 0.01}),
    }


def fmt(steps: int | None) -> str:
    return f">{MAX_STEPS}/div" if steps is None else str(steps)


def main() -> None:
    fmt_cls = argparse.RawDescriptionHelpFormatter
    argparse.ArgumentParser(description=__doc__, formatter_class=fmt_cls).parse_args()
    torch.set_num_threads(1)
    print(f"psi(r, theta) = r^2 + {K:g} (r - theta + {A:g} sin({W:g} r))^2, start (r, theta) = {START}, "
          f"threshold psi < {THRESHOLD:g}, max {MAX_STEPS} steps, momentum alpha = 0.9")
    print(f"{'optimizer':42s} | {'best steps':>10s} | {'best config':34s} | {'steps @ common config':>30s}")
    print("-" * 126)
    t0 = time.time()
    for name, (grid, make, common) in candidates().items():
        best: tuple[int, dict] | None = None
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            kw = dict(zip(keys, values))
            s = steps_to_threshold(make, kw)
            if s is not None and (best is None or s < best[0]):
                best = (s, kw)
        at_common = steps_to_threshold(make, common)
        common_txt = f"{fmt(at_common)} ({', '.join(f'{k}={v:g}' for k, v in common.items())})"
        best_txt = ", ".join(f"{k}={v:g}" for k, v in best[1].items()) if best else "-"
        print(f"{name:42s} | {fmt(best[0] if best else None):>10s} | {best_txt:34s} | {common_txt:>30s}")
    print("Muon: n/a (the parameter is a 2-vector, not a matrix)")
    print(f"[{time.time() - t0:.1f} s]")


if __name__ == "__main__":
    main()
