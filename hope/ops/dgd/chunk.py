"""Chunk-parallel DGD on MLP memories: the CPU path and the reference of the Triton kernels.

Inside a chunk all keys, targets, layer inputs and error terms come from the anchor (the chunk-start state,
paper Eq. 91), so each weight matrix follows a linear recurrence solved in parallel over the chunk
(:mod:`hope.ops.dgd.linear`); the chunks themselves run in sequence (:mod:`hope.ops.dgd.chunk_loop`, with an
analytic backward). The drivers here handle streaming: a call that starts inside a chunk an earlier call left
open first finishes that chunk segment by segment (under autograd), then runs the whole chunks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from hope.ops.common import segments
from hope.ops.dgd.chunk_loop import kv_chunks, memory_chunks
from hope.ops.dgd.common import (
    Flags,
    MemoryState,
    activation,
    check_inputs,
    collect_velocity,
    inner_grads,
    l2norm,
    memory_forward,
    self_generated_target,
    start_chunk,
)
from hope.ops.dgd.linear import ChunkGates, effective_eta, gated_step, linear_chunk

LinearStep = Callable[..., tuple[Tensor, Tensor | None, Tensor]]


def _linear_with_steps(w: Tensor, u: Tensor, e: Tensor, x: Tensor | None, eta: Tensor, log_alpha: Tensor,
                       dgd: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    """:func:`linear_chunk` returning the segment's steps ``sum_t c_t u_t^T`` instead of the anchored gradient
    (what the velocity collects with ``velocity_decay=False``)."""
    w_end, y, cache = gated_step(w, u, e, x, effective_eta(eta, u, dgd), ChunkGates.from_log_alpha(log_alpha), dgd)
    return w_end, y, cache.c.transpose(-1, -2) @ u


def _mlp_segment(
    state: MemoryState,
    k: Tensor,
    target: Tensor,
    q: Tensor | None,
    eta: Tensor,
    log_alpha: Tensor,
    f: Flags,
    linear: LinearStep,
) -> tuple[MemoryState, Tensor | None]:
    """Both layers of the memories in ``state`` over one segment; returns the new state and ``M_t(q_t)``.

    The velocity collects the change of the weights (heavy-ball momentum), or the segment's steps when
    ``f.velocity_decay`` is off."""
    steps = f.momentum and not f.velocity_decay
    if steps:
        linear = _linear_with_steps
    u1, d1, u2, d2 = inner_grads(state.a1, state.a2, k, target, f.act, f.dgd, damping=f.damping)
    w2, y2, s2 = linear(state.w2, u2.expand(d1.shape), d2, q, eta, log_alpha, f.dgd)
    hq = None if q is None else activation(y2, f.act)
    w1, y1, s1 = linear(state.w1, u1, d1, hq, eta, log_alpha, f.dgd)
    if steps:
        v1, v2 = state.v1 + s1, state.v2 + s2
    else:
        v1, v2 = collect_velocity(state.v1, w1, state.w1), collect_velocity(state.v2, w2, state.w2)
    return MemoryState(w1, w2, state.a1, state.a2, v1, v2, state.offset), None if q is None else q + y1


def _flags(linear: LinearStep, **kw) -> Flags:
    """The ops' switches; a clear error where the Triton step cannot honour one."""
    f = Flags(**kw)
    if linear is not linear_chunk and f.momentum and not f.velocity_decay:
        raise ValueError("velocity_decay=False needs the step sums sum_t c_t u_t^T, which the Triton linear step "
                         "does not return: use backend 'chunk' or 'naive' for that ablation")
    return f


def _generic_end(T: int, offset: int, chunk_size: int, linear: LinearStep) -> int:
    """Tokens handled segment by segment: all of them for a custom ``linear`` step, else the rest of a chunk
    that an earlier call left open (the whole-chunk path starts at a chunk boundary)."""
    if linear is not linear_chunk:
        return T
    return min(T, (chunk_size - offset) % chunk_size)


def dgd_memory_chunk(
    k: Tensor,
    v: Tensor,
    q: Tensor,
    eta: Tensor,
    alpha: Tensor,
    beta: Tensor,
    state: MemoryState,
    *,
    chunk_size: int,
    dgd: bool = True,
    momentum: bool = True,
    self_target: bool = True,
    act: str = "silu",
    damping: bool = True,
    unit_target: bool = True,
    velocity_decay: bool = True,
    linear: LinearStep = linear_chunk,
) -> tuple[Tensor, MemoryState]:
    """Chunk-parallel equivalent of :func:`hope.ops.dgd.naive.dgd_memory_naive` (same arguments).

    ``linear`` runs one segment of one weight matrix (:func:`linear_chunk`, or the Triton kernel's drop-in).
    """
    check_inputs(chunk_size, k=k, v=v, q=q)
    f = _flags(linear, dgd=dgd, momentum=momentum, self_target=self_target, act=act, damping=damping,
               unit_target=unit_target, velocity_decay=velocity_decay)
    log_alpha = torch.log(alpha)
    T = k.shape[-2]
    end, outs = _generic_end(T, state.offset, chunk_size, linear), []
    for s, e in segments(end, state.offset, chunk_size):
        if state.offset == 0:
            state = start_chunk(state, beta[..., s], momentum)
        vs = v[..., s:e, :]
        target = self_generated_target(state.a1, state.a2, vs, act, unit_target) if self_target else vs
        offset = (state.offset + e - s) % chunk_size
        state, o = _mlp_segment(state, k[..., s:e, :], target, q[..., s:e, :], eta[..., s:e],
                                log_alpha[..., s:e], f, linear)
        state.offset = offset
        outs.append(o)
    if end < T:
        o, state = memory_chunks(k[..., end:, :], v[..., end:, :], q[..., end:, :], eta[..., end:],
                                  log_alpha[..., end:], beta[..., end:], state, chunk_size, f)
        outs.append(o)
    return (torch.cat(outs, dim=-2) if outs else q.clone()), state


def smt_kv_chunk(
    k_in: Tensor,
    v_in: Tensor,
    eta: Tensor,
    alpha: Tensor,
    beta: Tensor,
    state: MemoryState,
    *,
    chunk_size: int,
    dgd: bool = True,
    momentum: bool = True,
    act: str = "silu",
    damping: bool = True,
    unit_target: bool = True,
    velocity_decay: bool = True,
    linear: LinearStep = linear_chunk,
) -> tuple[Tensor, Tensor, MemoryState]:
    """Chunk-parallel equivalent of :func:`hope.ops.dgd.naive.smt_kv_naive` (same arguments, ``linear`` as in
    :func:`dgd_memory_chunk`)."""
    check_inputs(chunk_size, k_in=k_in, v_in=v_in)
    f = _flags(linear, dgd=dgd, momentum=momentum, act=act, damping=damping, unit_target=unit_target,
               velocity_decay=velocity_decay)
    log_alpha = torch.log(alpha)
    T = k_in.shape[-2]
    end, ks, vs = _generic_end(T, state.offset, chunk_size, linear), [], []
    for s, e in segments(end, state.offset, chunk_size):
        if state.offset == 0:
            state = start_chunk(state, beta[..., s], momentum)
        a1, a2 = state.a1, state.a2
        k = l2norm(memory_forward(a1[0], a2[0], k_in[..., s:e, :], act))
        v = memory_forward(a1[1], a2[1], v_in[..., s:e, :], act)
        targets = self_generated_target(a1, a2, v, act, unit_target)
        offset = (state.offset + e - s) % chunk_size
        state, _ = _mlp_segment(state, k, targets, None, eta[..., s:e], log_alpha[..., s:e], f, linear)
        state.offset = offset
        ks.append(k)
        vs.append(v)
    if end < T:
        k, v, state = kv_chunks(k_in[..., end:, :], v_in[..., end:, :], eta[..., end:], log_alpha[..., end:],
                                 beta[..., end:], state, chunk_size, f)
        ks.append(k)
        vs.append(v)
    if not ks:
        return k_in.clone(), v_in.clone(), state
    return torch.cat(ks, dim=-2), torch.cat(vs, dim=-2), state
