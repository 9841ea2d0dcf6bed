"""Chunk-parallel CMS level: per chunk one batched forward of the read-out and of the keys (one matmul for
both), and one summed gradient (LaCT-style). Levels of another MLP form than bias-free SwiGLU (seeded from a
pretrained model, ``hope.adapt``) run every chunk through the segment path, under autograd.

``first_order=True``: the outer gradient treats the inner gradient as a constant (stop-gradient on each
chunk's summed gradient and on the partial sum carried in the state); the read-out is unchanged."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from hope.ops.cms.chunk_loop import LevelChunks
from hope.ops.cms.common import (
    CMSLevelState,
    accumulate,
    assoc_keys_values,
    check_level_inputs,
    level_grads,
    read_level,
)
from hope.ops.common import segments


def _segments(x, keys, values, eta, state, chunk_size, first_order=False):
    """Token segments cut at chunk boundaries, under autograd (partial chunks at either end of a call)."""
    outs = []
    for s, e in segments(x.shape[1], state.offset, chunk_size):
        n = e - s
        out, acts = read_level(state, torch.cat([x[:, s:e], keys[:, s:e]], dim=1))
        outs.append(out[:, :n])
        grads = level_grads(state, keys[:, s:e], out[:, n:] - values[:, s:e], tuple(t[:, n:] for t in acts))
        if first_order:
            grads = tuple(g.detach() for g in grads)
        state = accumulate(state, grads, n, eta, chunk_size)
    return outs, state


def cms_level_chunk(
    x: Tensor, w_key: Tensor, w_value: Tensor, eta: Tensor, state: CMSLevelState, *, chunk_size: int,
    first_order: bool = False, unit_kv: bool = True,
) -> tuple[Tensor, CMSLevelState]:
    """Chunk-parallel equivalent of :func:`hope.ops.cms.naive.cms_level_naive` (same arguments).

    The tokens that finish a chunk an earlier call left open, and a final partial chunk, run segment by
    segment under autograd; the whole chunks in between run in :class:`LevelChunks` (analytic backward), for
    the SwiGLU form without biases (other forms take the segment path throughout).
    """
    check_level_inputs(x, chunk_size)
    with torch.set_grad_enabled(torch.is_grad_enabled() and not first_order):  # first order: keys get no gradient
        keys, values = assoc_keys_values(x, w_key, w_value, unit_kv)
    if first_order:
        state = state.detach_sums()
    T = x.shape[1]
    head = min(T, (chunk_size - state.offset) % chunk_size)
    n_full = (T - head) // chunk_size
    mid = head + n_full * chunk_size
    seg = dict(chunk_size=chunk_size, first_order=first_order)
    outs, state = _segments(x[:, :head], keys[:, :head], values[:, :head], eta, state, **seg)
    if n_full and not state.is_swiglu:
        rest, state = _segments(x[:, head:], keys[:, head:], values[:, head:], eta, state, **seg)
        return torch.cat(outs + rest, dim=1), state
    if n_full:
        split = lambda t: t[:, head:mid].unflatten(1, (n_full, chunk_size))  # noqa: E731
        rows = torch.cat([split(x), split(keys)], dim=2)  # per chunk: its inputs, then its keys
        y, w_in, w_out = LevelChunks.apply(first_order, rows, split(values), eta, state.w_in, state.w_out)
        outs.append(y.flatten(1, 2))
        state = dataclasses.replace(state, w_in=w_in, w_out=w_out)
    tail, state = _segments(x[:, mid:], keys[:, mid:], values[:, mid:], eta, state, **seg)
    return torch.cat(outs + tail, dim=1), state
