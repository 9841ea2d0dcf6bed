"""Benchmark of the Triton DGD ops against the PyTorch chunk backend and SDPA attention.

    python -m hope.kernels.bench                 # preset shapes on CUDA; a small reference timing on CPU
    python -m hope.kernels.bench --batch 4 --seq 2048 --presets hope-340m

Correctness-gated: before any timing, the Triton ops are compared with the chunk backend (outputs and all
gradients, fp32, a small odd shape at the preset's head size); when parity fails the script prints the
failure and reports no speedup (exit status 1). Reports ms and TFLOP/s (model FLOPs of ``hope/kernels/README.md``;
fwd+bwd counted as 3x the forward for the memory ops, 3.5x for attention) for the forward and the
forward+backward of ``smt_kv`` (chunk ``chunk_other``) and ``dgd_memory`` (chunk ``chunk_memory``), and for
causal SDPA attention at the same ``(B, H, T, d)``. Without a GPU it says so, checks parity under the
Triton interpreter, and times only the PyTorch reference and SDPA at a small shape.

The triton ops' forward is the one-launch kernel over all chunks (``hope/kernels/dgd/chunks_fwd.py``) and their
backward the per-chunk kernels with a recompute; where the one-launch kernel does not fit on the GPU (head size
128, ``hope/kernels/README.md``, "On-chip limits") the ops warn once and run the per-chunk forward, so the
timings are of that.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import torch

CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: the kernels run interpreted on CPU

import torch.nn.functional as F  # noqa: E402

from hope.config import HopeConfig  # noqa: E402
from hope.ops.dgd import MemoryState, dgd_memory_chunk, smt_kv_chunk  # noqa: E402


def flops_dgd_memory(B: int, H: int, T: int, d: int, h: int, n: int) -> float:
    """Forward model FLOPs of ``dgd_memory`` (DGD on, self targets): ``26 d h + 8 n (d + h)`` per token."""
    return float(B * H * T * (26 * d * h + 8 * n * (d + h)))


def flops_smt_kv(B: int, H: int, T: int, d: int, h: int, n: int) -> float:
    """Forward model FLOPs of ``smt_kv`` (two memories, DGD on): ``52 d h + 8 n (d + h)`` per token."""
    return float(B * H * T * (52 * d * h + 8 * n * (d + h)))


def flops_attention(B: int, H: int, T: int, d: int) -> float:
    """Forward FLOPs of causal attention: ``2 T^2 d`` per (batch, head)."""
    return float(B * H * 2 * T * T * d)


def make_inputs(B, H, T, d, h, dtype, device, seed=0, stack=()):
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, std=1.0):
        return (std * torch.randn(*shape, generator=gen)).to(device=device, dtype=dtype).requires_grad_()

    toks = [r(B, H, T, d) for _ in range(3)]
    gates = [(lo + span * torch.rand(B, H, T, generator=gen)).to(device=device, dtype=dtype).requires_grad_()
             for lo, span in ((0.05, 0.5), (0.9, 0.09), (0.1, 0.8))]
    w1, w2 = r(*stack, H, d, h, std=0.02), r(*stack, H, h, d, std=d ** -0.5)
    return toks, gates, (w1, w2)


def run_op(which, impl, inputs, chunk, B):
    (k, v, q), (eta, alpha, beta), (w1, w2) = inputs
    state = MemoryState.from_params(w1, w2, B, True)
    if which == "dgd_memory":
        o, st = impl(k, v, q, eta, alpha, beta, state, chunk_size=chunk)
        return [o, st.w1, st.w2, st.v1, st.v2]
    k2, v2, st = impl(k, v, eta, alpha, beta, state, chunk_size=chunk)
    return [k2, v2, st.w1, st.w2, st.v1, st.v2]


def leaves(inputs):
    toks, gates, ws = inputs
    return [*toks, *gates, *ws]


def parity(which, ker, ref, d, h, chunk, device) -> str | None:
    """None when the Triton op matches the chunk reference (fp32, outputs and all gradients), else why."""
    B, H, T = 2, 2, 2 * chunk + 3 if device == "cuda" else 13
    stack = (2,) if which == "smt_kv" else ()
    inputs = make_inputs(B, H, T, d, h, torch.float32, device, seed=1, stack=stack)
    chunk = chunk if device == "cuda" else 5
    outs = {}
    for name, impl in (("ref", ref), ("ker", ker)):
        o = run_op(which, impl, inputs, chunk, B)
        cots = [0.01 + 0.001 * torch.arange(t.numel(), device=device).reshape(t.shape).sin() for t in o]
        g = torch.autograd.grad(o, leaves(inputs), cots, allow_unused=True)  # smt_kv does not use q
        outs[name] = list(o) + [torch.zeros(()) if t is None else t for t in g]
    for i, (a, b) in enumerate(zip(outs["ker"], outs["ref"])):
        scale = b.abs().max().item() + 1e-6
        err = (a - b).abs().max().item() / scale
        if not torch.isfinite(a).all() or err > 1e-3:
            return f"{which}: tensor {i} differs (max rel err {err:.2e})"
    return None


def timeit(fn, device, reps=3) -> float:
    """Milliseconds per call (median; triton's do_bench on CUDA)."""
    if device == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=5, rep=50, return_mode="median")
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return sorted(times)[len(times) // 2]


def bench_op(label, fn, inputs, flops_fwd, fwd_bwd_factor, device):
    def fwd():
        with torch.no_grad():
            fn()

    def fwd_bwd():
        outs = fn()
        torch.autograd.backward([o for o in outs], [torch.ones_like(o) for o in outs])

    for kind, f, fl in (("fwd", fwd, flops_fwd), ("fwd+bwd", fwd_bwd, fwd_bwd_factor * flops_fwd)):
        ms = timeit(f, device)
        print(f"| {label} | {kind} | {ms:9.3f} | {fl / ms / 1e9:9.4f} |")
        for t in leaves(inputs) if inputs is not None else []:
            t.grad = None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=["hope-340m", "hope-1.3b"])
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seq", type=int, default=None)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = p.parse_args(argv)

    from hope.kernels import triton_ops

    ops = triton_ops()
    device = "cuda" if CUDA else "cpu"
    if CUDA:
        print(f"device: {torch.cuda.get_device_name()}")
    else:
        print("no CUDA GPU: the Triton kernels run only under the interpreter here (not timed); checking "
              "parity under the interpreter and timing the PyTorch chunk reference and SDPA at a small shape")
    # without a GPU every preset maps to the same small shape: run it once
    for name in args.presets if CUDA else args.presets[:1]:
        cfg = HopeConfig.from_name(name)
        H, d, h = cfg.n_heads, cfg.head_dim, cfg.memory_hidden
        cm, co = cfg.chunk_memory, cfg.chunk_other
        gate_d, gate_h = (d, h) if CUDA else (8, 8)
        for which, ker, ref, chunk in (("smt_kv", ops.smt_kv, smt_kv_chunk, co),
                                       ("dgd_memory", ops.dgd_memory, dgd_memory_chunk, cm)):
            problem = parity(which, ker, ref, gate_d, gate_h, chunk, device)
            if problem is not None:
                print(f"PARITY FAILED ({name}, {which}): {problem}; refusing to report timings")
                return 1
        what = "" if CUDA else " (interpreter, d=h=8, T=13, chunk 5)"
        print(f"\n## {name}: parity OK{what} (fp32, outputs and all gradients vs chunk backend)")
        if CUDA:
            B, T, dtype = args.batch or 8, args.seq or cfg.max_seq_len, getattr(torch, args.dtype)
            impls = (("triton", ops), ("chunk", None))
        else:
            B, T, dtype = args.batch or 1, args.seq or 256, torch.float32
            H, d, h = 2, 32, 32
            impls = (("chunk", None),)
        print(f"B={B} H={H} T={T} d={d} h={h} chunk_other={co} chunk_memory={cm} dtype={dtype}")
        print("| op | pass | ms | TFLOP/s |\n|---|---|---|---|")
        for impl_name, table in impls:
            for which, chunk, ref, fl in (("smt_kv", co, smt_kv_chunk, flops_smt_kv),
                                          ("dgd_memory", cm, dgd_memory_chunk, flops_dgd_memory)):
                stack = (2,) if which == "smt_kv" else ()
                inputs = make_inputs(B, H, T, d, h, dtype, device, stack=stack)
                impl = ref if table is None else getattr(table, which)
                fn = functools.partial(run_op, which, impl, inputs, chunk, B)
                bench_op(f"{which} ({impl_name})", fn, inputs, fl(B, H, T, d, h, chunk), 3.0, device)
        q, k, v = (torch.randn(B, H, T, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        bench_op("SDPA causal attention", lambda q=q, k=k, v=v: [F.scaled_dot_product_attention(
            q, k, v, is_causal=True)], None, flops_attention(B, H, T, d), 3.5, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
