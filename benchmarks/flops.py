"""Work per token and how fast it runs: analytic FLOPs (``hope.flops``) against the measured training speed and
this machine's measured matmul peak, all in one run; and the analytic table of every preset.

    python benchmarks/flops.py                          # tiny presets at B=4, T=512 and 2048; table of presets
    python benchmarks/flops.py --first-order            # also tiny with cms_first_order=True
    python benchmarks/flops.py --presets tiny --compile --seq-lens 2048 --skip-table   # eager vs compiled
    python benchmarks/flops.py --seq-lens 512 --steps 3 --threads 2 --skip-table

Achieved GFLOP/s = analytic matmul FLOPs per token (forward + backward; the AdamW step and elementwise work are
not counted; attention dense as ``FlopCounterMode`` counts it, and in the last column over the causal pairs
only, the work a causal kernel needs) x measured tokens/s of a training step (forward, backward, AdamW on random
tokens, fp32). The peak is a 1024 x 1024 fp32 matmul timed in the same process, its bursts interleaved with the
models' steps so that load from other processes hits them alike; each figure is a median over steps.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from train_speed import step_seconds  # benchmarks/ is on sys.path when run as a script

from hope import HopeConfig, HopeLM
from hope.config import PRESETS
from hope.flops import flops_per_token, memory_per_sequence, total_flops_per_token
from hope.ops.common import COMPILE_ENV

TINY = ["tiny", "titans-tiny", "hope-attention-tiny", "transformer-tiny"]
GIB = 2**30


def matmul_seconds(n: int = 1024, reps: int = 10) -> float:
    """Seconds of one ``n x n`` fp32 matmul (mean over a burst of ``reps``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return (time.perf_counter() - t) / reps


def measure(configs: dict[str, HopeConfig], batch: int, seq_len: int, steps: int, warmup: int):
    """Median training-step seconds of each config and the median matmul peak (GFLOP/s), interleaved. A label
    ending in ``+ compile`` runs as ``train.compile=true`` does: each block through ``torch.compile`` and the
    memory ops' per-chunk functions with ``HOPE_COMPILE_CHUNKS=1`` (the compilation falls in the warm-up). Python's
    garbage collector runs on train.py's schedule (``train.gc_every``), its collections between the rounds."""
    runs, compiled = [], []
    for label, cfg in configs.items():
        torch.manual_seed(0)
        model = HopeLM(cfg)
        compiled.append(label.endswith("+ compile"))
        if compiled[-1]:
            for block in model.blocks:
                block.compile()
        x = torch.randint(0, cfg.vocab_size, (batch, seq_len))
        runs.append((model, torch.optim.AdamW(model.parameters(), lr=4e-4), lambda x=x: x))
    peaks = []
    matmul_seconds()
    times = step_seconds(runs, steps, warmup, compiled,
                         between_rounds=lambda: peaks.append(2 * 1024**3 / matmul_seconds() / 1e9))
    return [statistics.median(ts) for ts in times], statistics.median(peaks)


def speed_table(configs: dict[str, HopeConfig], batch: int, seq_lens: list[int], steps: int, warmup: int) -> None:
    print(f"Training step (forward, backward, AdamW), B={batch}, fp32, {torch.get_num_threads()} threads, "
          f"{platform.machine()}, torch {torch.__version__}; median of {steps} steps after {warmup} warm-up")
    print("| T | model | MFLOP / token (fwd + bwd) | tokens/s | achieved GFLOP/s | % of peak | "
          "efficiency / Transformer++'s | the same, causal attention counted |")
    print("|---|---|---|---|---|---|---|---|")
    for T in seq_lens:
        secs, peak = measure(configs, batch, T, steps, warmup)
        rates, causal = {}, {}
        for (label, cfg), s in zip(configs.items(), secs):
            rates[label] = total_flops_per_token(cfg, T).total * batch * T / s / 1e9
            causal[label] = total_flops_per_token(cfg, T, causal=True).total * batch * T / s / 1e9
        for (label, cfg), s in zip(configs.items(), secs):
            ref = "transformer-tiny + compile" if label.endswith("+ compile") else "transformer-tiny"  # same mode
            base, base_c = rates.get(ref), causal.get(ref)
            ratio = f"{rates[label] / base:.2f}" if base else "-"
            ratio_c = f"{causal[label] / base_c:.2f} ({100 * causal[label] / peak:.0f}% of peak)" if base_c else "-"
            print(f"| {T} | {label} | {total_flops_per_token(cfg, T).total / 1e6:.1f} | {batch * T / s:,.0f} | "
                  f"{rates[label]:.1f} | {100 * rates[label] / peak:.0f}% | {ratio} | {ratio_c} |")
        print(f"| {T} | 1024x1024 fp32 matmul (peak, same run) | | | {peak:.1f} | 100% | | |")


def preset_table(seq_len: int) -> None:
    print(f"\nAnalytic work per token and memory per sequence at T={seq_len} (fp32)")
    print("| preset | MFLOP / token fwd | bwd | total | SMT memories | CMS in-context | fast state | "
          "saved / layer | activations (no ckpt) | with per-block ckpt |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in PRESETS:
        cfg = HopeConfig.from_name(name)
        parts = flops_per_token(cfg, seq_len)
        tot = sum(parts.values(), type(parts["lm_head"])())
        smt = sum(p.total for k, p in parts.items() if "memor" in k)
        cms = parts["CMS in-context"].total if "CMS in-context" in parts else 0.0
        mem = memory_per_sequence(cfg, seq_len)
        print(f"| {name} | {tot.forward / 1e6:,.1f} | {tot.backward / 1e6:,.1f} | {tot.total / 1e6:,.1f} | "
              f"{100 * smt / tot.total:.0f}% | {100 * cms / tot.total:.0f}% | {mem['fast_state'] / GIB:.2f} GiB | "
              f"{mem['saved_per_layer'] / GIB:.2f} GiB | {mem['activations'] / GIB:.1f} GiB | "
              f"{mem['activations_checkpointed'] / GIB:.1f} GiB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=TINY)
    parser.add_argument("--first-order", action="store_true", help="also time tiny with cms_first_order=True")
    parser.add_argument("--compile", action="store_true", help=f"also time each model compiled as train.compile=true "
                        f"does (torch.compile of each block, and {COMPILE_ENV}=1: of the memory ops' per-chunk "
                        "functions)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-lens", nargs="+", type=int, default=[512, 2048])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table-len", type=int, default=4096)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-table", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configs = {name: HopeConfig.from_name(name, backend="chunk") for name in args.presets}
    if args.first_order:
        configs["tiny (cms_first_order)"] = HopeConfig.from_name("tiny", backend="chunk", cms_first_order=True)
    if args.compile:
        configs.update({f"{label} + compile": cfg for label, cfg in list(configs.items())})
    if not args.skip_speed:
        speed_table(configs, args.batch, args.seq_lens, args.steps, args.warmup)
    if not args.skip_table:
        preset_table(args.table_len)


if __name__ == "__main__":
    main()
