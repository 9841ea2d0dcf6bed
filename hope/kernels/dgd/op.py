"""Autograd wrapper of the Triton chunk kernels and the ``dgd_memory`` / ``smt_kv`` ops built on them.

``linear_chunk`` has the signature and semantics of :func:`hope.ops.dgd.linear.linear_chunk`; its forward and
backward are the Triton kernels of ``hope/kernels/dgd/fwd.py`` and ``hope/kernels/dgd/bwd.py``. ``TRITON_STEP``
plugs the same kernels into the one chunk driver (:mod:`hope.ops.dgd.chunk_loop`) as its per-chunk step, so
``dgd_memory`` and ``smt_kv`` are :mod:`hope.ops.dgd.chunk` with the forward over all chunks in one launch
(``hope/kernels/dgd/chunks_fwd.py``, :func:`chunks_forward`). Their backward is one launch over all chunks too
(``hope/kernels/dgd/chunks_bwd.py``, :func:`chunks_backward`); where the kernel does not fit the device, the
backward recomputes each chunk from its saved start state with the per-chunk kernels and back-propagates the
momentum step, the inner gradients at the anchor and the self-generated targets in PyTorch with their analytic VJPs
(see ``hope/kernels/README.md``).
"""

from __future__ import annotations

import os
import warnings

import torch
import triton
from torch import Tensor
from triton.runtime.errors import OutOfResources

from hope.kernels.dgd.bwd import linear_chunk_bwd_kernel
from hope.kernels.dgd.chunks_bwd import dgd_chunks_bwd_kernel, kv_chunks_bwd_kernel
from hope.kernels.dgd.chunks_fwd import GELU, GELU_TANH, SILU, dgd_chunks_fwd_kernel, kv_chunks_fwd_kernel
from hope.kernels.dgd.fwd import linear_chunk_fwd_kernel
from hope.ops.dgd.chunk import dgd_memory_chunk, smt_kv_chunk
from hope.ops.dgd.common import Flags, MemoryState
from hope.ops.dgd.step import FusedChunks, FusedGrads, StepGrads, StepHint

#: Allocate kernel outputs NaN-filled instead of uninitialised, so an element a kernel fails to write is
#: caught by the parity tests (set by ``tests/kernels/conftest.py``; costs a fill, so off by default).
NAN_FILL = os.environ.get("HOPE_KERNELS_NAN_FILL", "0") == "1"
#: Upper bound of the row block ``BM`` of ``W`` per program (tests lower it to exercise row splitting).
MAX_BLOCK_M = 64


def _empty(shape, dtype, device) -> Tensor:
    if NAN_FILL:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _check_device(t: Tensor) -> None:
    if t.device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise RuntimeError(
            f"the Triton DGD kernels need CUDA tensors (got {t.device}); on CPU set TRITON_INTERPRET=1 "
            "before importing triton, or use backend='chunk' (same semantics)"
        )


def _meta(n: int, m: int, k: int, dtype: torch.dtype) -> dict:
    bt = max(16, triton.next_power_of_2(n))
    bk = max(16, triton.next_power_of_2(k))
    bm = max(16, min(MAX_BLOCK_M, triton.next_power_of_2(m)))
    prec = "ieee" if dtype == torch.float32 or dtype == torch.float64 else "tf32"
    warps = 4 if bt * max(bm, bk) <= 64 * 64 else 8
    return dict(BT=bt, BM=bm, BK=bk, DOT_PREC=prec, num_warps=warps)


def linear_chunk_forward(w, u, delta, x, eta, la, dgd: bool) -> tuple[Tensor, Tensor | None, Tensor, tuple]:
    """The forward kernel on flat ``(N, ...)`` operands: ``(w_end, y, s)`` and what the backward needs."""
    N, n, k = u.shape
    m = w.shape[-2]
    w, u, delta, eta, la = (t.contiguous() for t in (w, u, delta, eta, la))
    x = None if x is None else x.contiguous()
    meta = _meta(n, m, k, w.dtype)
    w_end = _empty(w.shape, w.dtype, w.device)
    s = _empty(w.shape, w.dtype, w.device)
    y = None if x is None else _empty((N, n, m), x.dtype, w.device)
    if N > 0 and n > 0:
        grid = (N, triton.cdiv(m, meta["BM"]))
        linear_chunk_fwd_kernel[grid](
            w, u, delta, x if x is not None else u, eta, la, w_end, y if y is not None else w_end, s,
            n, m, k, DGD=dgd, HAS_X=x is not None, **meta)
    return w_end, y, s, (w, u, delta, x, eta, la)


def linear_chunk_backward(saved: tuple, dgd: bool, dwend: Tensor | None, dy: Tensor | None, ds: Tensor | None):
    """The backward kernel: cotangents ``(w, u, delta, x, eta, la)`` given those of ``(w_end, y, s)``."""
    w, u, delta, x, eta, la = saved
    N, n, k = u.shape
    m = w.shape[-2]
    dwend = torch.zeros_like(w) if dwend is None else dwend.contiguous()
    ds = torch.zeros_like(w) if ds is None else ds.contiguous()
    if x is not None:
        dy = torch.zeros(N, n, m, dtype=x.dtype, device=x.device) if dy is None else dy.contiguous()
    meta = _meta(n, m, k, w.dtype)
    nb = triton.cdiv(m, meta["BM"])
    f32 = torch.float32
    dw = _empty(w.shape, w.dtype, w.device)
    dd = _empty(delta.shape, delta.dtype, w.device)
    du = _empty((N, nb, n, k), f32, w.device)
    dx = _empty((N, nb, n, k), f32, w.device) if x is not None else None
    deta = _empty((N, nb, n), f32, w.device)
    dla = _empty((N, nb, n), f32, w.device)
    if N > 0 and n > 0:
        linear_chunk_bwd_kernel[(N, nb)](
            w, u, delta, x if x is not None else u, eta, la,
            dwend, dy if dy is not None else dwend, ds,
            dw, dd, du, dx if dx is not None else du, deta, dla,
            n, m, k, nb, DGD=dgd, HAS_X=x is not None, **meta)
    du = du.sum(1).to(u.dtype)
    dx = None if dx is None else dx.sum(1).to(x.dtype)
    return dw, du, dd, dx, deta.sum(1).to(eta.dtype), dla.sum(1).to(la.dtype)


class LinearChunkFunction(torch.autograd.Function):
    """``(w_end, y, s)`` of one chunk for ``N`` independent memories; tensors flattened to ``(N, ...)``."""

    @staticmethod
    def forward(ctx, w, u, delta, x, eta, la, dgd: bool):
        w_end, y, s, saved = linear_chunk_forward(w, u, delta, x, eta, la, dgd)
        ctx.save_for_backward(*saved)
        ctx.dgd = dgd
        return (w_end, s) if y is None else (w_end, y, s)

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        dwend, dy, ds = (grads[0], None, grads[1]) if saved[3] is None else grads
        return (*linear_chunk_backward(saved, ctx.dgd, dwend, dy, ds), None)


_ACT = {"silu": SILU, "gelu": GELU, "gelu_tanh": GELU_TANH}
#: Configurations whose fused kernel needs more on-chip memory than the device has (see :func:`chunks_forward`).
_DECLINED: set = set()


def _decline(key: tuple, what: str, instead: str, device, d: int, h: int, C: int, err: Exception) -> None:
    """Remember that a one-launch kernel does not fit this configuration and warn once; returns None (the
    driver's answer for a declined call)."""
    _DECLINED.add(key)
    warnings.warn(f"the one-launch DGD {what} does not fit on {device} at head size d={d}, hidden h={h}, chunk {C} "
                  f"({err}); such calls run {instead} (same results, slower)", stacklevel=3)


def chunk_blocks(C: int, d: int, h: int, kv_bwd: bool = False) -> dict:
    """The block sizes of the one-launch kernels and ``STAGE`` (``fwd._staged``: a fresh copy of a whole-matrix
    operand at each ``tl.dot``, so that only one dot at a time holds it in shared memory), on for matrices larger
    than 64 x 64, which otherwise do not fit an H100 (``hope/kernels/README.md``, "On-chip limits"), from 64 x 64 on
    for the key/value backward (``kv_bwd``: two memories' cotangents and recompute; 234 KB at ``d = h = 64``, chunk
    16, without it), and never under the interpreter (no inline asm there; the copy is the identity)."""
    bd, bh = max(16, triton.next_power_of_2(d)), max(16, triton.next_power_of_2(h))
    large = bd * bh >= 64 * 64 if kv_bwd else bd * bh > 64 * 64
    stage = large and os.environ.get("TRITON_INTERPRET", "0") != "1"
    return dict(BT=max(16, triton.next_power_of_2(C)), BD=bd, BH=bh, STAGE=stage)


def _chunks_meta(f: Flags, C: int, d: int, h: int, dtype: torch.dtype, kv_bwd: bool = False) -> dict:
    """The block sizes and flags of the one-launch kernels (forward and backward; ``kv_bwd``: the key/value
    backward)."""
    return dict(chunk_blocks(C, d, h, kv_bwd), DOT_PREC=_meta(C, h, d, dtype)["DOT_PREC"],
                ACT=_ACT[f.act], DGD=f.dgd, DAMPING=f.damping, UNIT=f.unit_target, MOMENTUM=f.momentum)


def chunks_forward(f: Flags, derive: bool, cont: bool, x1, x2, q, eta, log_alpha, beta, state, anchors) -> FusedChunks:
    """The one-launch forward of the chunk driver (``hope/kernels/dgd/chunks_fwd.py``) on its chunked flat inputs
    (``(N, n_chunks, C, ...)``; ``N`` is twice the number of ``(b, h)`` pairs with ``derive``). Flags the kernel
    cannot honour raise a ValueError naming them. Returns None (the driver then loops over the per-chunk kernels)
    when the kernel at these sizes needs more shared memory than the GPU has (the whole ``W1``, ``W2`` and their
    velocities stay on chip, which large heads do not fit), with a warning the first time."""
    if f.momentum and not f.velocity_decay:
        raise ValueError("velocity_decay=False: the fused Triton forward collects the velocity as the change of the "
                         "weights only; use backend 'chunk' or 'naive' for that ablation")
    if f.act not in _ACT:
        raise ValueError(f"act={f.act!r}: the fused Triton forward supports {tuple(_ACT)}")
    _check_device(x1)
    N, nc, C, d = x1.shape
    mats = [t.contiguous() for t in (state if f.momentum else state[:2])]  # w1, w2 (, v1, v2)
    w1, w2 = mats[:2]
    h = w1.shape[-1]
    x1, eta, log_alpha, beta = (t.contiguous() for t in (x1, eta, log_alpha, beta))
    a1, a2 = (w1, w2) if anchors is None else (t.contiguous() for t in anchors)
    end = [_empty(t.shape, t.dtype, t.device) for t in mats]
    starts = [_empty((N, nc, *t.shape[1:]), t.dtype, t.device) for t in mats]
    last = [_empty(t.shape, t.dtype, t.device) for t in (w1, w2)]

    def vel(ts: list) -> list:  # without momentum the kernel touches no velocity: the weights' pointers stand in
        return ts if f.momentum else ts + ts

    meta = dict(_chunks_meta(f, C, d, h, w1.dtype), CONT=cont)
    key = (derive, x1.device, *meta.items())
    if key in _DECLINED:
        return None
    try:
        if derive:
            P = N // 2
            outs = tuple(_empty((P, nc, C, d), x1.dtype, x1.device) for _ in range(2))
            if P > 0:
                kv_chunks_fwd_kernel[(P,)](x1, eta, log_alpha, beta, *vel(mats), a1, a2, *outs, *vel(end), *last,
                                           *vel(starts), P, nc, C, d, h, **meta)
        else:
            q, x2 = q.contiguous(), x2.contiguous()
            outs = (_empty(q.shape, q.dtype, q.device),)
            if N > 0:
                dgd_chunks_fwd_kernel[(N,)](x1, x2, q, eta, log_alpha, beta, *vel(mats), a1, a2, *outs, *vel(end),
                                            *last, *vel(starts), nc, C, d, h, SELF_TARGET=f.self_target, **meta)
    except OutOfResources as err:  # raised before the launch: nothing was written
        return _decline(key, "forward", "the per-chunk Triton kernels", x1.device, d, h, C, err)
    pad = [] if f.momentum else [None, None]
    return FusedChunks(outs, tuple(end + pad), tuple(last), tuple(starts + pad))


def chunks_backward(f: Flags, derive: bool, cont: bool, x1, x2, q, eta, log_alpha, beta, starts, anchors, g_outs,
                    g_end, g_anchors) -> FusedGrads | None:
    """The one-launch backward (``hope/kernels/dgd/chunks_bwd.py``) after :func:`chunks_forward`: the driver's chunked
    flat inputs, the chunk-start states the forward returned, the cotangents of the outputs (``g_outs``: the
    read-out, or with ``derive`` the keys and values), of the end state ``(w1, w2, v1, v2)`` and of the last chunk's
    anchors. The main memory runs ``dgd_chunks_bwd_kernel`` (one program per memory), the key/value memories
    (``derive``) ``kv_chunks_bwd_kernel`` (one program per key/value pair, as the forward). Returns None (the driver
    then runs its per-chunk loop, same results) when the kernel does not fit on the device (with a warning the first
    time)."""
    N, nc, C, d = x1.shape
    h = starts[0].shape[-1]
    meta = dict(_chunks_meta(f, C, d, h, starts[0].dtype, derive), CONT=cont)
    key = ("bwd", derive, x1.device, *meta.items())
    if key in _DECLINED:
        return None
    x1, eta, log_alpha, beta = (t.contiguous() for t in (x1, eta, log_alpha, beta))
    w1s, w2s = (t.contiguous() for t in starts[:2])
    v1s, v2s = (t.contiguous() for t in starts[2:]) if f.momentum else (w1s, w2s)
    g_out = [g.contiguous() for g in g_outs]
    w1, w2 = w1s[:, 0], w2s[:, 0]
    a1, a2 = (w1s, w2s) if anchors is None else (t.contiguous() for t in anchors)
    g_w1, g_w2, g_v1, g_v2, g_a1, g_a2 = (torch.zeros_like(w) if g is None else g.contiguous() for g, w in zip(
        (*g_end, *g_anchors), (w1, w2, w1, w2, w1, w2)))
    deta, dla, dbeta = (_empty(t.shape, t.dtype, t.device) for t in (eta, log_alpha, beta))
    dw1, dw2 = (_empty(w.shape, w.dtype, w.device) for w in (w1, w2))
    dv1, dv2 = (_empty(w.shape, w.dtype, w.device) for w in (w1, w2)) if f.momentum else (dw1, dw2)
    da1, da2 = (_empty(w.shape, w.dtype, w.device) for w in (w1, w2)) if cont else (dw1, dw2)
    state = (g_w1, g_w2, g_v1, g_v2, g_a1, g_a2)
    grads = (deta, dla, dbeta, dw1, dw2, dv1, dv2, da1, da2)
    try:
        if derive:
            dx = _empty(x1.shape, x1.dtype, x1.device)
            toks = dict(x1=dx)
            if N > 0:
                kv_chunks_bwd_kernel[(N // 2,)](x1, eta, log_alpha, beta, w1s, w2s, v1s, v2s, a1, a2, *g_out, *state,
                                                dx, *grads, N // 2, nc, C, d, h, **meta)
        else:
            x2, q = x2.contiguous(), q.contiguous()
            dk, dv, dq = (_empty(t.shape, t.dtype, t.device) for t in (x1, x2, q))
            toks = dict(x1=dk, x2=dv, q=dq)
            if N > 0:
                dgd_chunks_bwd_kernel[(N,)](x1, x2, q, eta, log_alpha, beta, w1s, w2s, v1s, v2s, a1, a2, *g_out,
                                            *state, dk, dv, dq, *grads, nc, C, d, h, SELF_TARGET=f.self_target,
                                            **meta)
    except OutOfResources as err:  # raised before the launch: nothing was written
        return _decline(key, "backward", "the per-chunk backward loop", x1.device, d, h, C, err)
    vel = (dv1, dv2) if f.momentum else (None, None)
    inputs = dict(toks, eta=deta, log_alpha=dla, beta=dbeta if f.momentum else None)
    return FusedGrads(inputs, (dw1, dw2, *vel), (da1, da2) if cont else (None, None))


class TritonStep:
    """The per-chunk step of the chunk driver (:mod:`hope.ops.dgd.step`) on the Triton kernels: it reads the
    chunk's ``log alpha`` and raw ``eta`` (the kernels form the gate products and the proximal step), and cannot
    return the steps' sum (``velocity_decay=False`` is refused before the first chunk). With ``fused`` (the
    default, :data:`TRITON_STEP`) the driver's forward is the one-launch kernel over all chunks
    (:func:`chunks_forward`) and, with ``fused_backward`` (the default), its backward is the one-launch kernel too
    (:func:`chunks_backward`); elsewhere this per-chunk step recomputes each chunk in the backward."""

    name = "triton"
    steps_sum = False
    uses_gates = False

    def __init__(self, fused: bool = True, fused_backward: bool = True):
        self.chunks_forward = chunks_forward if fused else None
        self.chunks_backward = chunks_backward if fused and fused_backward else None

    def forward(self, w, u, e, x, eta, dgd, hint: StepHint):
        _check_device(u)
        w_end, y, _, saved = linear_chunk_forward(w, u, e, x, eta, hint.log_alpha, dgd)
        return w_end, y, (saved, dgd)

    def steps(self, ctx) -> Tensor:
        raise NotImplementedError("the Triton step does not return the steps' sum")

    def backward(self, ctx, g_wend, g_y, g_steps) -> StepGrads:
        if g_steps is not None:
            raise NotImplementedError("the Triton step does not take the steps' cotangent")
        saved, dgd = ctx
        dw, du, dd, dx, deta, dla = linear_chunk_backward(saved, dgd, g_wend, g_y, None)
        return StepGrads(dw, du, dd, dx, deta, {"log_alpha": dla})


TRITON_STEP = TritonStep()
#: The per-chunk kernels alone: the driver's forward loops over chunks (kept for tests and comparison).
TRITON_CHUNK_STEP = TritonStep(fused=False)
#: The one-launch forward with the driver's recompute loop as its backward (kept for tests and comparison).
TRITON_RECOMPUTE_STEP = TritonStep(fused_backward=False)


def linear_chunk(
    w: Tensor,
    u: Tensor,
    delta: Tensor,
    x: Tensor | None,
    eta: Tensor,
    log_alpha: Tensor,
    dgd: bool,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Drop-in for :func:`hope.ops.dgd.linear.linear_chunk` (same arguments, returns ``(w_end, y, s)``)."""
    _check_device(u)
    lead = torch.broadcast_shapes(w.shape[:-2], u.shape[:-2], delta.shape[:-2], eta.shape[:-1],
                                  log_alpha.shape[:-1], *(() if x is None else (x.shape[:-2],)))
    n, k = u.shape[-2:]
    m = w.shape[-2]
    N = 1
    for s in lead:
        N *= s

    def flat(t: Tensor, tail: tuple[int, ...]) -> Tensor:
        return t.expand(*lead, *tail).reshape(N, *tail)

    args = (flat(w, (m, k)), flat(u, (n, k)), flat(delta, (n, m)), None if x is None else flat(x, (n, k)),
            flat(eta, (n,)), flat(log_alpha, (n,)))
    out = LinearChunkFunction.apply(*args, dgd)
    w_end, s = out[0], out[-1]
    y = out[1].reshape(*lead, n, m) if x is not None else None
    return w_end.reshape(*lead, m, k), y, s.reshape(*lead, m, k)


def dgd_memory(*args, **kwargs) -> tuple[Tensor, MemoryState]:
    """Triton-backed :func:`hope.ops.dgd.chunk.dgd_memory_chunk` (same arguments and results)."""
    return dgd_memory_chunk(*args, step=TRITON_STEP, **kwargs)


def smt_kv(*args, **kwargs) -> tuple[Tensor, Tensor, MemoryState]:
    """Triton-backed :func:`hope.ops.dgd.chunk.smt_kv_chunk` (same arguments and results)."""
    return smt_kv_chunk(*args, step=TRITON_STEP, **kwargs)
