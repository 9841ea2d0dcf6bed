"""Where the time of one SMT memory op goes on the CPU: time per chunk (forward + backward) of the DGD chunk
driver at a tiny preset's shape, eager and with ``HOPE_COMPILE_CHUNKS=1``, and the same at head size 4, where the
arithmetic is negligible and what remains is the fixed cost of a chunk (the driver's Python loop, the compiled
graphs' calls and guards, a few dozen small products and fused kernels per chunk).

    python benchmarks/chunk_cost.py                       # titans-tiny's main memory and tiny's key/value memories
    python benchmarks/chunk_cost.py --threads 2 --steps 7
    python benchmarks/chunk_cost.py --profile     # torch.profiler of the compiled titans-tiny op, by kernel
    python benchmarks/chunk_cost.py --inverse     # a step's (I + L)^-1: triangular solve against blocks
    python benchmarks/chunk_cost.py --chunk-sizes 8 16 32 64   # each op compiled at these chunk sizes

Random inputs at B=4, T=2048 (the ``benchmarks/flops.py`` shape); the variants take turns step by step and each
figure is a median, so load from other processes hits them alike. The achieved rate counts the analytic FLOPs of
``hope.flops`` for the op.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from hope import HopeConfig
from hope.flops import kv_chunk_flops, memory_chunk_flops
from hope.ops.common import COMPILE_ENV
from hope.ops.dgd import linear
from hope.ops.dgd.chunk import dgd_memory_chunk, smt_kv_chunk
from hope.ops.dgd.common import MemoryState


def make_op(kind: str, batch: int, heads: int, seq_len: int, d: int, chunk: int, self_target: bool):
    """A closure running one forward + backward of the op (``"memory"`` or ``"kv"``) on fixed random inputs."""
    gen = torch.Generator().manual_seed(0)

    def leaf(*shape, scale=1.0, shift=0.0):
        return (shift + scale * torch.rand(*shape, generator=gen)).requires_grad_()

    k = F.normalize(torch.randn(batch, heads, seq_len, d, generator=gen), dim=-1).requires_grad_()
    v = torch.randn(batch, heads, seq_len, d, generator=gen).requires_grad_()
    q = torch.randn(batch, heads, seq_len, d, generator=gen).requires_grad_()
    eta, alpha, beta = (leaf(batch, heads, seq_len, scale=0.1), leaf(batch, heads, seq_len, scale=0.1, shift=0.9),
                        leaf(batch, heads, seq_len, scale=0.9))
    lead = (2, heads) if kind == "kv" else (heads,)
    w1, w2 = (0.1 * torch.randn(*lead, d, d, generator=gen)).requires_grad_(), (
        0.1 * torch.randn(*lead, d, d, generator=gen)).requires_grad_()

    def run() -> None:
        state = MemoryState.from_params(w1, w2, batch, True)
        if kind == "kv":
            keys, values, _ = smt_kv_chunk(k, v, eta, alpha, beta, state, chunk_size=chunk)
            loss = keys.square().sum() + values.square().sum()
        else:
            out, _ = dgd_memory_chunk(k, v, q, eta, alpha, beta, state, chunk_size=chunk, self_target=self_target)
            loss = out.square().sum()
        loss.backward()

    return run


def call_seconds(ops: list[tuple[bool, Callable[[], None]]], steps: int) -> list[list[float]]:
    """Seconds of ``steps`` calls of each ``(compiled, op)``, the ops taking turns call by call (``compiled``:
    ``HOPE_COMPILE_CHUNKS`` for its calls); the first two rounds compile and warm up, untimed."""
    times: list[list[float]] = [[] for _ in ops]
    for i in range(steps + 2):
        for (compiled, run), ts in zip(ops, times):
            os.environ[COMPILE_ENV] = "1" if compiled else "0"
            t = time.perf_counter()
            run()
            if i >= 2:
                ts.append(time.perf_counter() - t)
    return times


def profile(args) -> None:
    """``torch.profiler`` table of one compiled forward + backward of titans-tiny's main memory, by op and kernel."""
    import torch._inductor.config as inductor_config
    from torch.profiler import profile as torch_profile

    inductor_config.cpp.enable_kernel_profile = True  # each fused kernel as its own profiler event
    os.environ[COMPILE_ENV] = "1"
    cfg = HopeConfig.from_name("titans-tiny")
    run = make_op("memory", args.batch, cfg.n_heads, args.seq_len, cfg.head_dim, cfg.chunk_memory, False)
    run(), run()
    with torch_profile() as prof:
        run()
    print(f"{args.seq_len // cfg.chunk_memory} chunks; self times summed over the call")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=80, max_name_column_width=60))


def inverse(args) -> None:
    """Compiled ``(I + L)^-1`` of a step's systems, by one triangular solve and by blocks at every size (what
    :func:`hope.ops.dgd.linear.unit_lower_inverse` does above ``INVERSE_BLOCKED_ABOVE`` rows); the two take
    turns, medians of ``100 x steps`` calls."""
    print("| systems x rows | solve ms | by blocks ms |")
    print("|---|---|---|")
    for batch, n in ((16, 16), (16, 32), (32, 64), (32, 128)):
        lower = (0.3 * torch.randn(batch, n, n)).tril(-1)
        fns = [torch.compile(fn, dynamic=False, options={"cpp_wrapper": True})
               for fn in (lambda x: linear.unit_lower_inverse(x, blocked=False), linear._blocked_inverse)]
        times = [[], []]
        for i in range(100 * args.steps + 10):
            for fn, ts in zip(fns, times):
                t = time.perf_counter()
                fn(lower)
                if i >= 10:
                    ts.append(time.perf_counter() - t)
        solve, blocks = (1e3 * statistics.median(ts) for ts in times)
        print(f"| {batch} x {n} | {solve:.3f} | {blocks:.3f} |")


def chunk_sizes(args) -> None:
    """Each op compiled at each of ``args.chunk_sizes`` (head size of its preset): time per token and the achieved
    rate, the ops taking turns call by call. The chunk size is part of the model (the chunk's tokens all learn
    from its start state), so this prices a choice; it does not make one."""
    runs = []  # (label, chunk, FLOPs of one call, op)
    for preset, kind in (("titans-tiny", "memory"), ("tiny", "memory"), ("tiny", "kv")):
        cfg = HopeConfig.from_name(preset)
        d, self_target = cfg.head_dim, cfg.mixer == "smt"
        label = f"{preset} {'main memory' if kind == 'memory' else 'key/value memories'}"
        for chunk in args.chunk_sizes:
            flops = 2 * kv_chunk_flops(chunk, d, d).total if kind == "kv" else \
                memory_chunk_flops(chunk, d, d, self_target=self_target).total
            flops *= args.batch * cfg.n_heads * args.seq_len / chunk
            runs.append((label, chunk, flops, make_op(kind, args.batch, cfg.n_heads, args.seq_len, d, chunk,
                                                      self_target)))
    times = call_seconds([(True, run) for *_, run in runs], args.steps)
    print(f"One op compiled, forward + backward, B={args.batch}, T={args.seq_len}, fp32, {torch.get_num_threads()} "
          f"threads; median of {args.steps} calls")
    print("| op | chunk | ms / chunk | us / token (all B x H memories) | GFLOP/s |")
    print("|---|---|---|---|---|")
    for (label, chunk, flops, _), ts in zip(runs, times):
        sec = statistics.median(ts)
        print(f"| {label} | {chunk} | {1e3 * sec * chunk / args.seq_len:.2f} | {1e6 * sec / args.seq_len:.1f} | "
              f"{flops / sec / 1e9:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="profile one compiled call of titans-tiny's main memory, "
                   "with Inductor's kernels named, instead of timing")
    p.add_argument("--inverse", action="store_true", help="time a step's (I + L)^-1 by a triangular solve and by "
                   "blocks, compiled, instead")
    p.add_argument("--chunk-sizes", type=int, nargs="+", metavar="C", help="time each op compiled at these chunk "
                   "sizes instead")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.chunk_sizes:
        chunk_sizes(args)
        return
    if args.profile:
        profile(args)
        return
    if args.inverse:
        inverse(args)
        return
    runs = []  # (label, head size, chunk, FLOPs of one call, compiled, op)
    for preset, kind in (("titans-tiny", "memory"), ("tiny", "memory"), ("tiny", "kv")):
        cfg = HopeConfig.from_name(preset)
        chunk = cfg.chunk_memory if kind == "memory" else cfg.chunk_other
        self_target = cfg.mixer == "smt"  # Titans' memory learns the given values
        label = f"{preset} {'main memory' if kind == 'memory' else 'key/value memories'}"
        for d in (cfg.head_dim, 4):  # the memory's hidden width h is the head size in the tiny presets
            if kind == "kv":
                flops = 2 * kv_chunk_flops(chunk, d, d).total
            else:
                flops = memory_chunk_flops(chunk, d, d, self_target=self_target).total
            flops *= args.batch * cfg.n_heads * args.seq_len / chunk
            for compiled in (False, True):
                op = make_op(kind, args.batch, cfg.n_heads, args.seq_len, d, chunk, self_target)
                runs.append((label, d, chunk, flops, compiled, op))
    times = call_seconds([(compiled, run) for *_, compiled, run in runs], args.steps)
    print(f"One op, forward + backward, B={args.batch}, T={args.seq_len}, fp32, {torch.get_num_threads()} threads, "
          f"{platform.machine()}, torch {torch.__version__}; median of {args.steps} calls")
    print("| op | head size | chunk | chunks | eager ms / chunk | compiled ms / chunk | compiled GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    for j in range(0, len(runs), 2):
        label, d, chunk, flops, _, _ = runs[j]
        n_chunks = args.seq_len // chunk
        eager, comp = (statistics.median(times[j + c]) for c in (0, 1))
        print(f"| {label} | {d} | {chunk} | {n_chunks} | {1e3 * eager / n_chunks:.2f} | {1e3 * comp / n_chunks:.2f} | "
              f"{flops / comp / 1e9:.1f} |")


if __name__ == "__main__":
    main()
