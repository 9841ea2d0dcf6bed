"""Chunk-parallel CMS level: per chunk one batched forward of the read-out and of the keys (one matmul for
both), and one summed gradient (LaCT-style). Levels of another MLP form than bias-free SwiGLU (seeded from a
pretrained model, ``hope.adapt``) run every chunk through the segment path, under autograd."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from hope.ops.cms.chunk_loop import LevelChunks
from hope.ops.cms.common import CMSLevelState, accumulate, check_level_inputs, level_grads, read_level
from hope.ops.common import l2norm, segments


def _segments(x, keys, values, eta, state, chunk_size):
    """Token segments cut at chunk boundaries, under autograd (partial chunks at either end of a call)."""
    outs = []
    for s, e in segments(x.shape[1], state.offset, chunk_size):
        n = e - s
        out, acts = read_level(state, torch.cat([x[:, s:e], keys[:, s:e]], dim=1))
        outs.append(out[:, :n])
        grads = level_grads(state, keys[:, s:e], out[:, n:] - values[:, s:e], tuple(t[:, n:] for t in acts))
        state = accumulate(state, grads, n, eta, chunk_size)
    return outs, state


def cms_level_chunk(
    x: Tensor, w_key: Tensor, w_value: Tensor, eta: Tensor, state: CMSLevelState, *, chunk_size: int
) -> tuple[Tensor, CMSLevelState]:
    """Chunk-parallel equivalent of :func:`hope.ops.cms.naive.cms_level_naive` (same arguments).

    The tokens that finish a chunk an earlier call left open, and a final partial chunk, run segment by
    segment under autograd; the whole chunks in between run in :class:`LevelChunks` (analytic backward), for
    the SwiGLU form without biases (other forms take the segment path throughout).
    """
    check_level_inputs(x, chunk_size)
    keys, values = l2norm(x @ w_key.transpose(-1, -2)), l2norm(x @ w_value.transpose(-1, -2))
    T = x.shape[1]
    head = min(T, (chunk_size - state.offset) % chunk_size)
    n_full = (T - head) // chunk_size
    mid = head + n_full * chunk_size
    outs, state = _segments(x[:, :head], keys[:, :head], values[:, :head], eta, state, chunk_size)
    if n_full and not state.is_swiglu:
        return _cat_segments(x[:, head:], keys[:, head:], values[:, head:], eta, state, chunk_size, outs)
    if n_full:
        split = lambda t: t[:, head:mid].unflatten(1, (n_full, chunk_size))  # noqa: E731
        rows = torch.cat([split(x), split(keys)], dim=2)  # per chunk: its inputs, then its keys
        y, w_in, w_out = LevelChunks.apply(rows, split(values), eta, state.w_in, state.w_out)
        outs.append(y.flatten(1, 2))
        state = dataclasses.replace(state, w_in=w_in, w_out=w_out)
    tail, state = _segments(x[:, mid:], keys[:, mid:], values[:, mid:], eta, state, chunk_size)
    return torch.cat(outs + tail, dim=1), state


def _cat_segments(x, keys, values, eta, state, chunk_size, outs):
    rest, state = _segments(x, keys, values, eta, state, chunk_size)
    return torch.cat(outs + rest, dim=1), state
