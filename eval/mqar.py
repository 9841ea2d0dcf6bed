"""Multi-query associative recall (MQAR; Arora et al., "Zoology: Measuring and Improving Recall in Efficient
Language Models", 2023, section 3.1), trained from scratch and scored on held-out sequences.

A sequence first lists ``n_pairs`` key-value pairs ``k_1 v_1 ... k_n v_n`` (distinct keys from the lower half of
the vocabulary above 0, values from the upper half), then, in the rest of the sequence, every key once more as a
query followed by its value; the model must predict the value at each query, and only those positions are
scored. As in Zoology, queries sit at even offsets of the remainder with gaps drawn from a power law that favours
short distances (``p(gap) ~ gap^(a - 1)``, ``a = 0.01``), and the query's value also appears in the input after
it. Departure: the filler between queries is token 0 rather than random tokens (so that no filler can look like a
key), and every pair is queried exactly once.

    python -m eval.mqar --preset tiny --steps 300 --lengths 64,128,256 --pairs 4,8,16 --out results/mqar
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

POWER_A = 0.01  # Zoology's default exponent of the gap distribution


def check_sizes(seq_len: int, n_pairs: int, vocab: int) -> None:
    """Clear errors for settings MQAR cannot be built in."""
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    if seq_len < 4 * n_pairs:
        raise ValueError(f"seq_len={seq_len} is too short for {n_pairs} pairs: the pairs take {2 * n_pairs} tokens "
                         f"and their queries (key and value) another {2 * n_pairs}")
    if n_values(vocab) < n_pairs:
        raise ValueError(f"vocab={vocab} has too few keys for {n_pairs} distinct ones (keys: 1 .. {n_values(vocab)})")


def n_values(vocab: int) -> int:
    """How many keys (and values) a vocabulary of ``vocab`` tokens holds; 1 / n_values is chance accuracy."""
    return (vocab - 1) // 2


def make_batch(batch: int, seq_len: int, n_pairs: int, vocab: int, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, labels)`` of shape ``(batch, seq_len)``; labels are -100 except at queries (the paired value)."""
    check_sizes(seq_len, n_pairs, vocab)
    half = n_values(vocab)  # keys 1..half, values half+1..2*half
    space = (seq_len - 2 * n_pairs) // 2  # query slots in the remainder
    p = torch.arange(1, space + 1, dtype=torch.float64) ** (POWER_A - 1)
    x = torch.zeros(batch, seq_len, dtype=torch.long)
    y = torch.full((batch, seq_len), -100, dtype=torch.long)
    for b in range(batch):
        keys = torch.randperm(half, generator=generator)[:n_pairs] + 1
        values = torch.randint(half + 1, 2 * half + 1, (n_pairs,), generator=generator)
        x[b, 0 : 2 * n_pairs : 2], x[b, 1 : 2 * n_pairs : 2] = keys, values
        slots = torch.multinomial(p, n_pairs, replacement=False, generator=generator)
        order = torch.randperm(n_pairs, generator=generator)  # which pair each slot queries
        pos = 2 * n_pairs + 2 * slots
        x[b, pos], x[b, pos + 1] = keys[order], values[order]
        y[b, pos] = values[order]
    return x, y


def mqar_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x).logits
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)


def train_mqar(model: nn.Module, steps: int, batch: int, lengths: list[int], pairs: list[int], vocab: int,
               lr: float = 1e-3, seed: int = 0, log_every: int = 0) -> list[float]:
    """AdamW on fresh batches, each of one ``(seq_len, n_pairs)`` drawn from the valid combinations (a mixed-length
    curriculum, as Zoology trains); returns the loss per step."""
    combos = [(t, n) for t in lengths for n in pairs if t >= 4 * n]
    if not combos:
        raise ValueError(f"no valid (seq_len, n_pairs) among lengths={lengths}, pairs={pairs}")
    g, pick = torch.Generator().manual_seed(seed), random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    model.train()
    losses = []
    for step in range(steps):
        t, n = pick.choice(combos)
        x, y = make_batch(batch, t, n, vocab, g)
        loss = mqar_loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps} (T={t}, pairs={n}) loss {loss.item():.3f}", flush=True)
    return losses


@torch.no_grad()
def evaluate_mqar(model: nn.Module, seq_len: int, n_pairs: int, n_samples: int, vocab: int, seed: int = 10**6,
                  batch: int = 16) -> float:
    """Accuracy (argmax) on the queried values of ``n_samples`` held-out sequences (a seed stream apart from
    training's)."""
    was = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed + 1000 * seq_len + n_pairs)
    hit = total = 0
    for s in range(0, n_samples, batch):
        x, y = make_batch(min(batch, n_samples - s), seq_len, n_pairs, vocab, g)
        pred = model(x).logits.argmax(-1)
        mask = y != -100
        hit += int((pred[mask] == y[mask]).sum())
        total += int(mask.sum())
    model.train(was)
    return hit / total


def main(argv: list[str] | None = None) -> None:
    from eval.longctx import heatmap
    from hope import HopeConfig, HopeLM

    p = argparse.ArgumentParser(description="Train a fresh model on MQAR and score it over lengths x pairs.")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="HopeConfig override")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lengths", default="64,128,256")
    p.add_argument("--pairs", default="4,8,16")
    p.add_argument("--samples", type=int, default=64, help="held-out sequences per cell")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/mqar")
    args = p.parse_args(argv)
    from hope.training.config import parse_overrides

    _, overrides = parse_overrides([f"model.{item}" for item in args.set])
    cfg = HopeConfig.from_name(args.preset, **overrides)
    torch.manual_seed(args.seed)
    model = HopeLM(cfg)
    lengths, pairs = [int(x) for x in args.lengths.split(",")], [int(x) for x in args.pairs.split(",")]
    t0 = time.perf_counter()
    losses = train_mqar(model, args.steps, args.batch, lengths, pairs, cfg.vocab_size, args.lr, args.seed,
                        log_every=max(1, args.steps // 10))
    train_s = time.perf_counter() - t0
    cells: list[dict[str, Any]] = []
    for t in lengths:
        for n in pairs:
            if t >= 4 * n:
                acc = evaluate_mqar(model, t, n, args.samples, cfg.vocab_size)
                cells.append({"seq_len": t, "n_pairs": n, "acc": acc, "chance": 1 / n_values(cfg.vocab_size)})
                print(f"T={t} pairs={n}: accuracy {acc:.3f}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"preset": args.preset, "overrides": overrides, "params": model.num_params(), "steps": args.steps,
           "batch": args.batch, "lr": args.lr, "seed": args.seed, "final_loss": losses[-1],
           "losses": losses, "train_seconds": train_s, "seconds": time.perf_counter() - t0, "cells": cells}
    (out / "mqar.json").write_text(json.dumps(res, indent=2))
    heatmap([{"length": c["seq_len"], "depth": c["n_pairs"], "acc": c["acc"]} for c in cells],
            f"MQAR accuracy ({cfg.name})", out / "mqar.png", ylabel="key-value pairs", yfmt="{}")
    print(f"wrote {out}/mqar.json and mqar.png ({train_s:.0f} s training)")


if __name__ == "__main__":
    main()
