"""Whole chunks of a CMS level as one autograd Function with an analytic backward.

Per chunk ``j`` of ``C`` tokens the forward reads the level at its chunk-start weights for the inputs and the
keys in one batched SwiGLU, takes the summed associative gradient ``d = sum_t grad l(theta_j; k_t, v_t)`` and
steps ``theta_{j+1} = theta_j - eta d`` (paper Eq. 31). The backward walks the chunks in reverse with the
cotangent ``G`` of the weights: ``G_j = G_{j+1} + (read-out terms) - eta (d/d theta_j of <d, G_{j+1}>)``, the
last term a Hessian-vector product of the inner loss, written out for SwiGLU (``silu''`` appears through the
gate slope). Measured at B=2, T=2048, C=32: 0.21 s -> 0.16 s forward+backward per level (README, Speed).

``first_order=True`` (``HopeConfig.cms_first_order``) treats each chunk's summed gradient ``d`` as a constant:
``G_j = G_{j+1} + (read-out terms)``, ``eta`` gets ``-<d, G_{j+1}>``, and the keys and values get no gradient
(no Hessian-vector product; the backward is that of a static MLP per chunk).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from hope.ops.cms.common import assoc_grad_terms, fused_swiglu
from hope.ops.common import ChunkCalls, chunk_fn, silu_grad, silu_grad2


def _level_chunk(w_in: Tensor, w_out: Tensor, rows: Tensor, v: Tensor, eta: Tensor, first_order: bool = False):
    """One chunk: ``rows`` are its inputs ``x`` then its keys ``k`` (``2n`` rows); returns the read-out of ``x``,
    the stepped weights and the intermediates of the backward (``first_order``: the activations and ``d``)."""
    n = v.shape[-2]
    k = rows[..., n:, :]
    out, acts = fused_swiglu(w_in, w_out, rows)
    residual = out[..., n:, :] - v
    key_acts = tuple(t[..., n:, :] for t in acts)
    d_in, d_out, da, slope = assoc_grad_terms(k, residual, w_out, key_acts)
    saved = (acts, d_in, d_out) if first_order else (acts, residual, da, slope)
    return out[..., :n, :], w_in - eta * d_in, w_out - eta * d_out, saved


def _level_chunk_vjp(w_in, w_out, rows, eta, saved, g_y, g_win_next, g_wout_next):
    """Cotangents ``([x; k], v, eta, w_in, w_out)`` of one chunk given those of its read-out and next weights."""
    (g, u, sig, a), residual, da, slope = saved
    n = g_y.shape[-2]
    k = rows[..., n:, :]
    # d_in = P^T k with P = [da u s'(g), da silu(g)] and d_out = r^T a at the key rows (suffix _k); the
    # step's eta-gradient -<d_in, G_in> - <d_out, G_out> is read off the same products
    gk_, uk, sigk, ak = g[..., n:, :], u[..., n:, :], sig[..., n:, :], a[..., n:, :]
    gd_in, gd_out = -eta * g_win_next, -eta * g_wout_next
    p = torch.cat([da * uk * slope, da * gk_ * sigk], dim=-1)
    k_gin, r_gout = k @ g_win_next.transpose(-1, -2), residual @ g_wout_next
    g_eta = -(p * k_gin).sum() - (ak * r_gout).sum()
    g_p = -eta * k_gin
    g_k = p @ gd_in
    g_gate, g_up = g_p.chunk(2, dim=-1)
    g_da = g_gate * uk * slope + g_up * gk_ * sigk
    g_uk = g_gate * da * slope
    g_gk = (g_gate * uk * silu_grad2(gk_, sigk) + g_up * slope) * da
    g_res = g_da @ w_out.transpose(-1, -2) + ak @ gd_out.transpose(-1, -2)
    g_ak = g_res @ w_out - eta * r_gout
    g_wout = g_wout_next + torch.cat([g_y, g_res], dim=-2).transpose(-1, -2) @ a + residual.transpose(-1, -2) @ g_da
    # both row blocks through a = silu(g) u (the key rows also carry the terms of d_in above)
    gx_, ux, sigx = g[..., :n, :], u[..., :n, :], sig[..., :n, :]
    g_ax = g_y @ w_out
    g_g = torch.cat([g_ax * ux * silu_grad(gx_, sigx), g_ak * uk * slope + g_gk], dim=-2)
    g_u = torch.cat([g_ax * gx_ * sigx, g_ak * gk_ * sigk + g_uk], dim=-2)
    g_gu = torch.cat([g_g, g_u], dim=-1)
    g_rows = g_gu @ w_in
    g_rows[..., n:, :] += g_k  # the keys also enter d_in directly
    g_win = g_win_next + g_gu.transpose(-1, -2) @ rows
    return g_rows, -g_res, g_eta, g_win, g_wout


def _level_chunk_vjp_first_order(w_in, w_out, rows, eta, saved, g_y, g_win_next, g_wout_next):
    """:func:`_level_chunk_vjp` with the summed gradient ``d`` held constant: only the read-out of the inputs
    is differentiated (the key rows and the values get zero)."""
    (g, u, sig, a), d_in, d_out = saved
    n = g_y.shape[-2]
    gx, ux, sigx, ax = g[..., :n, :], u[..., :n, :], sig[..., :n, :], a[..., :n, :]
    g_eta = -(d_in * g_win_next).sum() - (d_out * g_wout_next).sum()
    g_ax = g_y @ w_out
    g_gu = torch.cat([g_ax * ux * silu_grad(gx, sigx), g_ax * gx * sigx], dim=-1)
    g_rows = torch.cat([g_gu @ w_in, torch.zeros_like(rows[..., n:, :])], dim=-2)
    g_win = g_win_next + g_gu.transpose(-1, -2) @ rows[..., :n, :]
    g_wout = g_wout_next + g_y.transpose(-1, -2) @ ax
    return g_rows, None, g_eta, g_win, g_wout


class LevelChunks(torch.autograd.Function):
    """A CMS level over whole chunks: ``rows (B, n_chunks, 2C, D)`` (each chunk's inputs, then its keys) and
    ``values (B, n_chunks, C, D)``; ``first_order``: see the module docstring."""

    @staticmethod
    def forward(ctx, first_order, rows, values, eta, w_in, w_out):
        ys, starts, saved = [], [], []
        step = chunk_fn(_level_chunk)
        with ChunkCalls() as calls:
            for j, (rj, vj) in enumerate(zip(rows.unbind(1), values.unbind(1))):
                starts.append((w_in, w_out))
                calls.before(j)
                y, w_in, w_out, s = step(w_in, w_out, rj, vj, eta, first_order)
                ys.append(y)
                saved.append(s)
        ctx.first_order = first_order
        ctx.starts, ctx.saved, ctx.rows, ctx.eta = starts, saved, rows.unbind(1), eta
        ctx.shapes = (starts[0][0].shape, starts[0][1].shape)
        return torch.stack(ys, 1), w_in, w_out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y, g_win, g_wout):
        g_rows, g_v, g_eta = [], [], 0
        vjp = chunk_fn(_level_chunk_vjp_first_order if ctx.first_order else _level_chunk_vjp)
        n = len(ctx.saved)
        with ChunkCalls() as calls:
            for j in reversed(range(n)):
                w_in, w_out = ctx.starts[j]
                calls.before(n - 1 - j, outside_inputs=j == 0)
                gr, gv, ge, g_win, g_wout = vjp(w_in, w_out, ctx.rows[j], ctx.eta, ctx.saved[j], g_y[:, j], g_win,
                                                g_wout)
                g_rows.append(gr)
                g_v.append(gv)
                g_eta = g_eta + ge
        stack = lambda parts: None if parts[0] is None else torch.stack(parts[::-1], 1)  # noqa: E731
        return (None, stack(g_rows), stack(g_v), g_eta.reshape(ctx.eta.shape), g_win.sum_to_size(ctx.shapes[0]),
                g_wout.sum_to_size(ctx.shapes[1]))
