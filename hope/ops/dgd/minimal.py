"""One chunk of the main memory's DGD update, written to be read: the algorithm before the analytic backward.

No streaming, no momentum, one chunk of ``n <= C`` tokens starting at a chunk boundary; autograd does the
backward. It is the test reference of :mod:`hope.ops.dgd.naive` and :mod:`hope.ops.dgd.chunk` for that case
(``tests/ops/test_dgd_minimal.py``). Equations: ``shared/reference/paper_spec.md`` (arXiv numbering) and
``docs/semantics.md`` ("The SMT update rule"), whose reading this follows exactly.

A memory is ``M(z) = z + W1 s(W2 z)`` (Eq. 89), ``W2 (h x d)``, ``W1 (d x h)``, one per sequence and head.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hope.ops.common import activation, activation_grad, l2norm


def memory(w1: Tensor, w2: Tensor, x: Tensor, act: str = "silu") -> Tensor:
    """``M(x) = x + W1 s(W2 x)`` for rows ``x (..., n, d)`` (Eq. 89)."""
    return x + activation(x @ w2.mT, act) @ w1.mT


def local_targets(w1: Tensor, w2: Tensor, k: Tensor, target: Tensor, act: str = "silu"):
    """Layer inputs ``u`` and local targets ``y*`` of the inner loss ``0.5 ||M_0(k) - v^||^2`` at the anchor.

    Output layer ``W1``: input ``h = s(W2_0 k)``, target ``y*_1 = v^ - k`` (the residual branch's exact target).
    Hidden layer ``W2``: input ``k``, target ``y*_2 = z - delta2 / (1 + ||W1_0 diag(s'(z))||_F^2)``, a damped
    step in its output space, with ``z = W2_0 k`` and ``delta2 = (W1_0^T r) * s'(z)``, ``r = M_0(k) - v^``.
    """
    z = k @ w2.mT
    h, slope = activation(z, act), activation_grad(z, act)
    r = k + h @ w1.mT - target
    delta2 = (r @ w1) * slope
    damping = 1 + (slope * slope) @ (w1 * w1).sum(-2)[..., :, None]  # 1 + ||W1_0 diag(s'(z_t))||_F^2
    return (h, target - k), (k, z - delta2 / damping)


def dgd_chunk(w: Tensor, u: Tensor, y: Tensor, x: Tensor | None, eta: Tensor, alpha: Tensor):
    """The DGD recurrence of one weight matrix ``w (..., m, k)`` over a chunk, solved in parallel.

    Per token (Eq. 91 in the DGD reading; the step is the exact proximal step of Eq. 56-57):
        ``W_t = alpha_t W_{t-1} - eta'_t (W_{t-1} u_t - y*_t) u_t^T``,  ``eta'_t = eta_t / (1 + eta_t |u_t|^2)``.
    With ``gamma_t = prod_{s<=t} alpha_s``, ``W_t = gamma_t W_0 + sum_{s<=t} (gamma_t / gamma_s) c_s u_s^T``;
    putting that into ``c_t = -eta'_t (W_{t-1} u_t - y*_t)`` gives the unit lower-triangular system
    ``(I + L) C = R``, ``L_ts = eta'_t (gamma_{t-1} / gamma_s) u_t.u_s`` (s < t),
    ``R_t = eta'_t (y*_t - gamma_{t-1} W_0 u_t)``: the UT transform of the WY form (gated delta rule).
    Returns the end state ``W_n`` and the per-token reads ``W_t x_t`` (the dual form; None without ``x``).
    """
    n = u.shape[-2]
    eta = eta / (1 + eta * (u * u).sum(-1))
    g = torch.cumsum(torch.log(alpha), -1)  # log gamma_t
    g_prev = g - torch.log(alpha)  # log gamma_{t-1}
    below = torch.ones(n, n, dtype=torch.bool, device=u.device).tril(-1)
    strict = torch.where(below, g_prev[..., :, None] - g[..., None, :], -torch.inf).exp()  # gamma_{t-1}/gamma_s
    lower = eta[..., :, None] * strict * (u @ u.mT)
    rhs = eta[..., None] * (y - g_prev.exp()[..., None] * (u @ w.mT))
    c = torch.linalg.solve_triangular(torch.eye(n, dtype=u.dtype, device=u.device) + lower, rhs, upper=False)
    decay_to_end = (g[..., -1:] - g).exp()  # gamma_n / gamma_s
    w_end = g[..., -1:].exp()[..., None] * w + (decay_to_end[..., None] * c).mT @ u
    if x is None:
        return w_end, None
    causal = torch.where(below | torch.eye(n, dtype=torch.bool, device=u.device),
                         g[..., :, None] - g[..., None, :], -torch.inf).exp()  # gamma_t/gamma_s, s <= t
    return w_end, g.exp()[..., None] * (x @ w.mT) + (causal * (x @ u.mT)) @ c


def memory_chunk(w1: Tensor, w2: Tensor, k: Tensor, v: Tensor, q: Tensor, eta: Tensor, alpha: Tensor,
                 self_target: bool = True, act: str = "silu") -> tuple[Tensor, Tensor, Tensor]:
    """One chunk of the main memory from its chunk-start state ``(w1, w2)`` (the anchor of Eq. 90-91).

    ``k``, ``v``, ``q`` ``(..., n, d)`` (keys and queries unit-norm), ``eta``, ``alpha`` ``(..., n)``. Writes
    every key with the self-generated target ``v^ = L2norm(M_0(v))`` (Eq. 87/90, normalized as the keys) or
    ``v``; reads ``o_t = M_t(q_t)`` from the per-token state that includes token t's write. Returns
    ``(o, w1_end, w2_end)``; equal to :func:`hope.ops.dgd.naive.dgd_memory_naive` with ``momentum=False``.
    """
    target = l2norm(memory(w1, w2, v, act)) if self_target else v
    (u1, y1), (u2, y2) = local_targets(w1, w2, k, target, act)
    w2_end, z_q = dgd_chunk(w2, u2, y2, q, eta, alpha)  # hidden layer: W2_t q_t
    w1_end, out = dgd_chunk(w1, u1, y1, activation(z_q, act), eta, alpha)  # output layer: W1_t s(W2_t q_t)
    return q + out, w1_end, w2_end
