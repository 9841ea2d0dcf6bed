"""The DGD recurrence of one linear map over a chunk, in parallel: the building block of the chunk backend and
the reference of the Triton kernels.

Inside a chunk all layer inputs ``u_t`` and error terms ``e_t`` come from the anchor, so the per-token
recurrence of one weight matrix is linear in W:

    W_t = alpha_t W_{t-1} + c_t u_t^T,   c_t = -eta'_t (W_{t-1} u_t + e_t)      (DGD)
                                         c_t = -eta_t e_t                         (plain GD, dgd=False)

With gamma_t = prod_{s<=t} alpha_s this unrolls to W_t = gamma_t W_start + sum_{s<=t} (gamma_t/gamma_s) c_s u_s^T.
Substituting into c_t gives a unit lower-triangular system (I + L) C = R with
L_ts = eta'_t (gamma_{t-1}/gamma_s) u_t.u_s (s < t) and R_t = -eta'_t (gamma_{t-1} W_start u_t + e_t):
the UT/WY form of the gated delta rule (Yang et al. 2024, "Gated Delta Networks"), solved per chunk.
Per-token reads ``W_t x_t`` are then a masked ``(X U^T)`` product, the dual form of TTT (Sun et al. 2024).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from hope.ops.dgd.vjp import GatedStepCache


def _above(n: int, diagonal: int, device: torch.device) -> Tensor:
    """Boolean ``(n, n)`` mask of the entries above the ``diagonal``-th diagonal (those a causal product drops)."""
    i = torch.arange(n, device=device)
    return i[None, :] > i[:, None] + diagonal


@dataclasses.dataclass
class ChunkGates:
    """Products of the retention gates inside chunks, ``(..., n)`` or ``(..., n, n)`` per chunk.

    With ``g_t = sum_{s<=t} log alpha_s``: ``eg = gamma_t``, ``egp = gamma_{t-1}``, ``eend = gamma_n/gamma_t``,
    ``elast = gamma_n`` (``(..., 1)``), ``strict = gamma_{t-1}/gamma_s`` for ``s < t`` and ``causal =
    gamma_t/gamma_s`` for ``s <= t`` (zero elsewhere; exponents masked before ``exp``, so nothing overflows).
    """

    eg: Tensor
    egp: Tensor
    eend: Tensor
    elast: Tensor
    strict: Tensor
    causal: Tensor

    @classmethod
    def from_log_alpha(cls, log_alpha: Tensor) -> ChunkGates:
        n = log_alpha.shape[-1]
        g = torch.cumsum(log_alpha, dim=-1)
        gp = g - log_alpha
        gl = g[..., -1:]
        strict = (gp[..., :, None] - g[..., None, :]).masked_fill(_above(n, -1, g.device), float("-inf"))
        causal = (g[..., :, None] - g[..., None, :]).masked_fill(_above(n, 0, g.device), float("-inf"))
        return cls(g.exp(), gp.exp(), (gl - g).exp(), gl.exp(), strict.exp(), causal.exp())


def effective_eta(eta: Tensor, u: Tensor, dgd: bool) -> Tensor:
    """The step of each token: ``eta' = eta / (1 + eta ||u||^2)`` (exact proximal DGD step) or ``eta``."""
    return eta / (1 + eta * (u * u).sum(-1)) if dgd else eta


#: above this many rows :func:`unit_lower_inverse` inverts by blocks (of at most ``INVERSE_LEAF`` rows)
INVERSE_BLOCKED_ABOVE, INVERSE_LEAF = 32, 16


def unit_lower_inverse(lower: Tensor, blocked: bool = True) -> Tensor:
    """``(I + L)^-1`` for strictly lower-triangular ``L (..., n, n)`` (the UT/WY system of a chunk).

    A triangular solve with ``n`` right-hand sides runs far below the matmul rate on the CPU (``python
    benchmarks/chunk_cost.py --inverse``: 32 systems of 64 rows in 0.74 ms compiled, 0.36 ms by blocks), so above
    ``INVERSE_BLOCKED_ABOVE`` rows (and ``blocked``) the inverse is built from the inverses of the diagonal halves,
    ``[[A, 0], [C, D]]^-1 = [[A^-1, 0], [-D^-1 C A^-1, D^-1]]``, halving down to ``INVERSE_LEAF`` rows."""
    n = lower.shape[-1]
    if blocked and n > INVERSE_BLOCKED_ABOVE:
        return _blocked_inverse(lower)
    eye = torch.eye(n, dtype=lower.dtype, device=lower.device).expand_as(lower)
    return torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)


def _blocked_inverse(lower: Tensor) -> Tensor:
    n = lower.shape[-1]
    if n <= INVERSE_LEAF:
        return unit_lower_inverse(lower, blocked=False)
    h = n // 2
    a_inv, d_inv = _blocked_inverse(lower[..., :h, :h]), _blocked_inverse(lower[..., h:, h:])
    below = -(d_inv @ (lower[..., h:, :h] @ a_inv))
    top = torch.cat([a_inv, a_inv.new_zeros(*a_inv.shape[:-1], n - h)], -1)
    return torch.cat([top, torch.cat([below, d_inv], -1)], -2)


def gated_step(w: Tensor, u: Tensor, delta: Tensor, x: Tensor | None, eta: Tensor, gates: ChunkGates, dgd: bool,
               tinv: Tensor | None = None, read: Tensor | None = None, uw: Tensor | None = None,
               xw: Tensor | None = None) -> tuple[Tensor, Tensor | None, GatedStepCache]:
    """:func:`linear_chunk` with the gate products given (``eta`` is already the effective step).

    Optional precomputed pieces (the chunk driver has them when ``w`` is the anchor): ``tinv``, the inverse of
    ``I + L`` (when ``u`` does not depend on the state); ``read``, ``causal * (x u^T)``; ``uw = u w^T`` and
    ``xw = x w^T``. Returns the end state, the read-out (or None) and what
    :func:`hope.ops.dgd.vjp.gated_step_vjp` needs.
    """
    gd = -eta[..., None] * delta  # the gradient part of c_t
    cache = GatedStepCache(w, u, delta, x, eta, gd, tinv=tinv, read=read, read_given=read is not None)
    if x is not None and xw is None:
        if read is None:  # x u^T and x w^T in one product
            xuw = x @ torch.cat([u, w], -2).transpose(-1, -2)
            cache.xu, xw = xuw[..., :u.shape[-2]], xuw[..., u.shape[-2]:]
        else:
            xw = x @ w.transpose(-1, -2)
    if dgd:
        cache.uw = u @ w.transpose(-1, -2) if uw is None else uw
        cache.rhs = gd - (eta * gates.egp)[..., None] * cache.uw
        if tinv is None:  # the inverse, not a solve: the VJP then needs a product, not a second solve
            cache.uu = u @ u.transpose(-1, -2)
            cache.inv = unit_lower_inverse(eta[..., :, None] * gates.strict * cache.uu)
            cache.c = cache.inv @ cache.rhs
        else:
            cache.c = tinv @ cache.rhs
    c = cache.c
    w_end = gates.elast[..., None] * w + (c * gates.eend[..., None]).transpose(-1, -2) @ u
    y = None
    if x is not None:
        if read is None:
            if cache.xu is None:
                cache.xu = x @ u.transpose(-1, -2)
            cache.read = gates.causal * cache.xu
        cache.xw = xw
        y = gates.eg[..., None] * xw + cache.read @ c
    return w_end, y, cache


def linear_chunk(
    w: Tensor,
    u: Tensor,
    delta: Tensor,
    x: Tensor | None,
    eta: Tensor,
    log_alpha: Tensor,
    dgd: bool,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Run the DGD recurrence of one linear map over a segment of ``n`` tokens, in parallel.

    ``w (..., m, k)`` is the state before the segment; ``u (..., n, k)`` layer inputs; ``delta (..., n, m)``
    output gradients; ``x (..., n, k)`` per-token queries or None; ``eta``, ``log_alpha`` ``(..., n)``.
    Returns the end state, ``y_t = W_t x_t`` (or None) and the gradient sum ``sum_t -eta'_t delta_t u_t^T``
    (returned for the kernels' parity tests; momentum uses the change of the weights instead).
    """
    eta = effective_eta(eta, u, dgd)
    w_end, y, _ = gated_step(w, u, delta, x, eta, ChunkGates.from_log_alpha(log_alpha), dgd)
    return w_end, y, (-eta[..., None] * delta).transpose(-1, -2) @ u
