"""Token-by-token ground truth of DGD on MLP memories (DESIGN.md section 3, SMT items 3-6).

For every token t, with the anchor W_0 refreshed at chunk boundaries and for each weight matrix W of a memory
with layer input u_t and output gradient delta_t of the inner loss (both at W_0), and the layer's local target
y*_t = W_0 u_t - delta_t:

    W_t = W_{t-1} (alpha_t I - eta'_t u_t u_t^T) + eta'_t y*_t u_t^T,   eta'_t = eta_t / (1 + eta_t ||u_t||^2)

the exact proximal (DGD) step of arXiv Eq. 56-57 on ``0.5 ||W u_t - y*_t||^2`` at the current state: paper
Eq. 91 in the "DGD-consistent" reading (paper_spec section 3.8 item 3; docs/semantics.md says why). For a
linear memory it is the gated delta rule. ``dgd=False``: ``W_t = alpha_t W_{t-1} - eta_t delta_t u_t^T``
(mini-batch GD with the anchored gradient). Momentum acts per chunk: opening a chunk does
``V <- beta V; W <- W + V``, and ``V`` collects every change of the weights inside the chunk (heavy ball).
Shapes: tokens ``(B, H, T, d)``, gates ``(B, H, T)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hope.ops.dgd.common import (
    MemoryState,
    check_inputs,
    collect_velocity,
    inner_grads,
    l2norm,
    memory_forward,
    self_generated_target,
    start_chunk,
)


def _dgd_token(w: Tensor, u: Tensor, err: Tensor, eta: Tensor, alpha: Tensor, dgd: bool) -> Tensor:
    """One token's update of one weight matrix ``w (..., m, n)`` (``err`` as returned by ``inner_grads``)."""
    eta = eta[..., None, None]
    u_row = u[..., None, :]
    if dgd:
        eta = eta / (1 + eta * (u * u).sum(-1)[..., None, None])
        err = (w @ u[..., :, None])[..., 0] + err  # the current state's prediction enters the error
    return alpha[..., None, None] * w - eta * (err[..., :, None] * u_row)


def _update(state: MemoryState, k: Tensor, target: Tensor, eta: Tensor, alpha: Tensor, dgd: bool,
            act: str, damping: bool, velocity_decay: bool) -> MemoryState:
    """Apply one token (``k``, ``target`` of shape ``(..., d)``) to every memory in ``state``; the velocity
    collects the change of the weights (without the retention decay when ``velocity_decay=False``)."""
    u1, e1, u2, e2 = inner_grads(state.a1, state.a2, k[..., None, :], target[..., None, :], act, dgd,
                                 damping=damping)
    w1 = _dgd_token(state.w1, u1[..., 0, :], e1[..., 0, :], eta, alpha, dgd)
    w2 = _dgd_token(state.w2, u2[..., 0, :].expand_as(e1[..., 0, :]), e2[..., 0, :], eta, alpha, dgd)
    keep = None if velocity_decay else alpha
    v1, v2 = collect_velocity(state.v1, w1, state.w1, keep), collect_velocity(state.v2, w2, state.w2, keep)
    return MemoryState(w1, w2, state.a1, state.a2, v1, v2, state.offset)


def dgd_memory_naive(
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
) -> tuple[Tensor, MemoryState]:
    """The main memory of (self-modifying) Titans, one token at a time.

    Writes key ``k_t`` with target ``L2norm(M_0(v_t))`` (``self_target``, paper Eq. 87/90; unnormalized with
    ``unit_target=False``) or ``v_t``, then reads ``o_t = M_t(q_t)`` from the per-token state that includes
    token t's write. ``damping``: the hidden layer's damped target (:func:`inner_grads`); ``velocity_decay``:
    the velocity collects the retention decay too (:func:`collect_velocity`). Returns ``(o, state)``.
    """
    check_inputs(chunk_size, k=k, v=v, q=q)
    outs = []
    for t in range(k.shape[-2]):
        if state.offset == 0:
            state = start_chunk(state, beta[..., t], momentum)
        vt = v[..., t, :]
        target = (self_generated_target(state.a1, state.a2, vt[..., None, :], act, unit_target)[..., 0, :]
                  if self_target else vt)
        state = _update(state, k[..., t, :], target, eta[..., t], alpha[..., t], dgd, act, damping, velocity_decay)
        outs.append(memory_forward(state.w1, state.w2, q[..., t, None, :], act)[..., 0, :])
        state.offset = (state.offset + 1) % chunk_size
    return torch.stack(outs, dim=-2), state


def smt_kv_naive(
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
) -> tuple[Tensor, Tensor, MemoryState]:
    """The self-modifying key and value memories (stacked on dim 0 of ``state``: 0 = M_k, 1 = M_v).

    At the chunk-start state: ``k_t = L2norm(M_k(k_in_t))``, ``v_t = M_v(v_in_t)`` and the self-generated
    targets ``L2norm(M_k(v_t))``, ``L2norm(M_v(v_t))`` (paper Eq. 90); each memory then takes a DGD step on
    key ``k_t``. The flags as in :func:`dgd_memory_naive`. Returns ``(k, v, state)``.
    """
    check_inputs(chunk_size, k_in=k_in, v_in=v_in)
    ks, vs = [], []
    for t in range(k_in.shape[-2]):
        if state.offset == 0:
            state = start_chunk(state, beta[..., t], momentum)
        a1, a2 = state.a1, state.a2
        kt = l2norm(memory_forward(a1[0], a2[0], k_in[..., t, None, :], act))[..., 0, :]
        vt = memory_forward(a1[1], a2[1], v_in[..., t, None, :], act)[..., 0, :]
        targets = self_generated_target(a1, a2, vt[..., None, :], act, unit_target)[..., 0, :]
        state = _update(state, kt, targets, eta[..., t], alpha[..., t], dgd, act, damping, velocity_decay)
        state.offset = (state.offset + 1) % chunk_size
        ks.append(kt)
        vs.append(vt)
    return torch.stack(ks, dim=-2), torch.stack(vs, dim=-2), state
