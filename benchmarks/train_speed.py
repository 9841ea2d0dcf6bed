"""CPU training throughput of the tiny presets, measured in one run, and held-out bits per byte of runs.

    python benchmarks/train_speed.py                                  # tiny (HOPE) vs transformer-tiny
    python benchmarks/train_speed.py --presets tiny titans-tiny transformer-tiny --seq-len 256
    python benchmarks/train_speed.py --results runs/tiny runs/transformer-tiny   # after the README runs
    python benchmarks/train_speed.py --collector --presets titans-tiny --seq-len 2048 --batch-size 4 --steps 10

Throughput: forward + backward + AdamW step on Shakespeare batches (byte tokens, fp32). The presets take
turns step by step, so load from other processes affects all of them alike; the median step time is
reported with the ratio to the first preset. Timings on a shared machine are noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from hope import HopeConfig, HopeLM
from hope.ops.common import COMPILE_ENV
from hope.training.collector import GarbageCollection
from hope.training.config import TrainConfig
from hope.training.data import PackedLoader, load_corpus
from hope.training.optimizer import build_optimizer
from hope.training.tokenizer import ByteTokenizer


def step_seconds(runs: list[tuple], steps: int, warmup: int = 1, compiled: list[bool] | None = None,
                 between_rounds: Callable[[], None] | None = None) -> list[list[float]]:
    """Seconds of each timed training step (forward, backward, optimizer) for each ``(model, optimizer,
    next_batch)``; the models take turns step by step, so drifts in machine load hit them alike. ``compiled``: per
    run, ``HOPE_COMPILE_CHUNKS`` for its steps; ``between_rounds`` runs after each round of steps. Python's
    garbage collector runs on train.py's schedule (``train.gc_every``), its collections between the rounds."""
    times: list[list[float]] = [[] for _ in runs]
    with GarbageCollection(TrainConfig.gc_every) as collector:
        for i in range(warmup + steps):
            for j, ((model, opt, next_batch), ts) in enumerate(zip(runs, times)):
                if compiled is not None:
                    os.environ[COMPILE_ENV] = "1" if compiled[j] else "0"
                x = next_batch()
                t = time.perf_counter()
                model(x, labels=x).loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if i >= warmup:
                    ts.append(time.perf_counter() - t)
            if between_rounds is not None:
                between_rounds()
            collector.step(i + 1)
    return times


def median_step_seconds(runs: list[tuple], steps: int, warmup: int = 1) -> list[float]:
    """Median of :func:`step_seconds` for each run."""
    return [statistics.median(ts) for ts in step_seconds(runs, steps, warmup)]


def throughput(presets: list[str], seq_len: int, batch_size: int, steps: int, warmup: int) -> None:
    tok = ByteTokenizer()
    cfg = TrainConfig(seq_len=seq_len, batch_size=batch_size)
    train, _, _ = load_corpus(cfg, tok)
    models, runs = {}, []
    for name in presets:
        torch.manual_seed(0)
        model = models[name] = HopeLM(HopeConfig.from_name(name, vocab_size=tok.vocab_size))
        runs.append((model, build_optimizer(model, cfg), PackedLoader(train, seq_len, batch_size, 0).next_batch))
    medians = median_step_seconds(runs, steps, warmup)
    print(f"CPU training throughput ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}), batch {batch_size} x {seq_len} "
          f"tokens, median of {steps} steps")
    print("| preset | params | step (s) | tokens/s | vs first |")
    print("|---|---|---|---|---|")
    base = None
    for (name, model), med in zip(models.items(), medians):
        tps = batch_size * seq_len / med
        base = base or tps
        print(f"| {name} | {model.num_params() / 1e6:.2f}M | {med:.3f} | {tps:.0f} | {tps / base:.2f}x |")


def results(run_dirs: list[str]) -> None:
    """Held-out loss and bits per byte of finished train.py runs (their result.json)."""
    print("| run | model | steps | tokens | held-out loss | bits per byte |")
    print("|---|---|---|---|---|---|")
    for d in run_dirs:
        res = json.loads((Path(d) / "result.json").read_text())
        model = json.loads((Path(d) / "run_config.json").read_text())["model"]["name"]
        loss, bpb = res.get("val_loss", float("nan")), res.get("val_bpb", float("nan"))
        print(f"| {d} | {model} | {res['step']} | {res['tokens']} | {loss:.4f} | {bpb:.4f} |")


def collector_cost(name: str, seq_len: int, batch_size: int, steps: int, warmup: int) -> None:
    """What Python's garbage collector costs a compiled training step (as ``train.compile=true``, random tokens):
    the objects it tracks, the collections it runs in a step when automatic, a full collection's time, and the
    step times with automatic collection and with it off (``train.gc_every``'s steps), alternating step by step."""
    torch.manual_seed(0)
    model = HopeLM(HopeConfig.from_name(name))
    for block in model.blocks:
        block.compile()
    os.environ[COMPILE_ENV] = "1"
    opt = torch.optim.AdamW(model.parameters(), lr=4e-4)
    x = torch.randint(0, model.config.vocab_size, (batch_size, seq_len))

    def step() -> float:
        t = time.perf_counter()
        model(x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    for _ in range(warmup + 1):
        step()
    gc.collect()
    tracked = len(gc.get_objects())
    times: dict[str, list[float]] = {"automatic": [], "off": []}
    counts = [0, 0, 0]  # collections per generation in the automatic steps
    try:
        for _ in range(steps):
            gc.enable()
            before = [g["collections"] for g in gc.get_stats()]
            times["automatic"].append(step())
            counts = [c + g["collections"] - b for c, g, b in zip(counts, gc.get_stats(), before)]
            gc.disable()
            times["off"].append(step())
    finally:
        gc.enable()
    tracked_after = len(gc.get_objects())
    t = time.perf_counter()
    freed = gc.collect()  # after a step with collection off: the cyclic garbage it left
    full = time.perf_counter() - t
    print(f"{name} compiled, B={batch_size}, T={seq_len}, {torch.get_num_threads()} threads: {tracked:,} tracked "
          f"objects before the timed steps, {tracked_after:,} after; per automatic step "
          f"{', '.join(f'{c / steps:.1f}' for c in counts)} collections of generations 0, 1, 2; a full collection "
          f"{1e3 * full:.0f} ms, freeing {freed} objects")
    print("| collection | median step (s) | mean | max |")
    print("|---|---|---|---|")
    for mode, ts in times.items():
        print(f"| {mode} | {statistics.median(ts):.3f} | {statistics.mean(ts):.3f} | {max(ts):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "transformer-tiny"])
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--results", nargs="*", help="run directories to compare instead of timing")
    parser.add_argument("--collector", action="store_true", help="instead, the garbage collector's cost in the "
                        "first preset's compiled step, automatic against off")
    args = parser.parse_args()
    if args.collector:
        collector_cost(args.presets[0], args.seq_len, args.batch_size, args.steps, args.warmup)
    elif args.results:
        results(args.results)
    else:
        throughput(args.presets, args.seq_len, args.batch_size, args.steps, args.warmup)


if __name__ == "__main__":
    main()
