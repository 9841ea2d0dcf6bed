"""Chunk-parallel DGD on MLP memories: the CPU path and the reference of the Triton kernels.

Inside a chunk all keys, targets, layer inputs ``u_t`` and error terms ``e_t`` come from the anchor (for DGD
``e_t = delta_t - W_0 u_t``, minus the layer's local target; for plain GD ``e_t = delta_t``, see
:func:`hope.ops.dgd.common.inner_grads`), so the per-token recurrence of one weight matrix is linear in W:

    W_t = alpha_t W_{t-1} + c_t u_t^T,   c_t = -eta'_t (W_{t-1} u_t + e_t)      (DGD)
                                         c_t = -eta_t e_t                         (plain GD, dgd=False)

With gamma_t = prod_{s<=t} alpha_s this unrolls to W_t = gamma_t W_start + sum_{s<=t} (gamma_t/gamma_s) c_s u_s^T.
Substituting into c_t gives a unit lower-triangular system (I + L) C = R with
L_ts = eta'_t (gamma_{t-1}/gamma_s) u_t.u_s (s < t) and R_t = -eta'_t (gamma_{t-1} W_start u_t + e_t):
the UT/WY form of the gated delta rule (Yang et al. 2024, "Gated Delta Networks"), solved per chunk.
Per-token reads ``W_t x_t`` are then a masked ``(X U^T)`` product, the dual form of TTT (Sun et al. 2024).
Autograd differentiates through these tensor ops (no create_graph), so the outer loss reaches every input.

Everything that does not depend on the memory state is computed for all chunks at once before the sequential
loop: the gate products, the decay masks and, for the main memory's first layer (whose input is the key),
the inverse of the triangular system and the masked query-key product. The final partial chunk is padded
with tokens that change nothing (eta = 0, alpha = 1).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from hope.ops.common import segments
from hope.ops.dgd.common import (
    MemoryState,
    activation,
    check_inputs,
    inner_grads,
    l2norm,
    memory_forward,
    self_generated_target,
    start_chunk,
)

LinearStep = Callable[..., tuple[Tensor, Tensor | None, Tensor]]


@functools.lru_cache(maxsize=64)
def _tril_mask(n: int, diagonal: int, device: torch.device) -> Tensor:
    """Boolean lower-triangular ``(n, n)`` mask (cached: the chunk loop asks for the same few sizes)."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril(diagonal)


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
        strict = (gp[..., :, None] - g[..., None, :]).masked_fill(~_tril_mask(n, -1, g.device), float("-inf"))
        causal = (g[..., :, None] - g[..., None, :]).masked_fill(~_tril_mask(n, 0, g.device), float("-inf"))
        return cls(g.exp(), gp.exp(), (gl - g).exp(), gl.exp(), strict.exp(), causal.exp())

    def at(self, j: int) -> ChunkGates:
        """The gates of chunk ``j`` when the fields carry a chunk axis before the token axes."""
        return ChunkGates(self.eg[..., j, :], self.egp[..., j, :], self.eend[..., j, :], self.elast[..., j, :],
                          self.strict[..., j, :, :], self.causal[..., j, :, :])


def effective_eta(eta: Tensor, u: Tensor, dgd: bool) -> Tensor:
    """The step of each token: ``eta' = eta / (1 + eta ||u||^2)`` (exact proximal DGD step) or ``eta``."""
    return eta / (1 + eta * (u * u).sum(-1)) if dgd else eta


def _gated_step(w: Tensor, u: Tensor, delta: Tensor, x: Tensor | None, eta: Tensor, gates: ChunkGates, dgd: bool,
                tinv: Tensor | None = None, read: Tensor | None = None,
                grad_sum: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """:func:`linear_chunk` with the gate products given (``eta`` is already the effective step).

    ``tinv``: the precomputed inverse of ``I + L`` (when ``u`` does not depend on the state); ``read``: the
    precomputed ``causal * (x u^T)``; ``grad_sum``: also return ``sum_t -eta'_t delta_t u_t^T`` (else None).
    """
    gd = -eta[..., None] * delta  # the gradient part of c_t
    if dgd:
        rhs = gd - (eta * gates.egp)[..., None] * (u @ w.transpose(-1, -2))
        if tinv is None:
            lower = eta[..., :, None] * gates.strict * (u @ u.transpose(-1, -2))
            c = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
        else:
            c = tinv @ rhs
    else:
        c = gd
    w_end = gates.elast[..., None] * w + (c * gates.eend[..., None]).transpose(-1, -2) @ u
    y = None
    if x is not None:
        read = gates.causal * (x @ u.transpose(-1, -2)) if read is None else read
        y = gates.eg[..., None] * (x @ w.transpose(-1, -2)) + read @ c
    return w_end, y, gd.transpose(-1, -2) @ u if grad_sum else None


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
    gates = ChunkGates.from_log_alpha(log_alpha)
    return _gated_step(w, u, delta, x, effective_eta(eta, u, dgd), gates, dgd, grad_sum=True)


def _mlp_segment(
    state: MemoryState,
    k: Tensor,
    target: Tensor,
    q: Tensor | None,
    eta: Tensor,
    log_alpha: Tensor,
    dgd: bool,
    act: str,
    linear: LinearStep,
) -> tuple[MemoryState, Tensor | None]:
    """Both layers of the memories in ``state`` over one segment; returns the new state and ``M_t(q_t)``."""
    u1, d1, u2, d2 = inner_grads(state.a1, state.a2, k, target, act, dgd)
    w2, y2, _ = linear(state.w2, u2.expand(d1.shape), d2, q, eta, log_alpha, dgd)
    hq = None if q is None else activation(y2, act)
    w1, y1, _ = linear(state.w1, u1, d1, hq, eta, log_alpha, dgd)
    return _advance(state, w1, w2), None if q is None else q + y1


def _advance(state: MemoryState, w1: Tensor, w2: Tensor) -> MemoryState:
    """The state after a segment; the velocity collects the change of the weights (heavy-ball momentum)."""
    v1 = None if state.v1 is None else state.v1 + (w1 - state.w1)
    v2 = None if state.v2 is None else state.v2 + (w2 - state.w2)
    return MemoryState(w1, w2, state.a1, state.a2, v1, v2, state.offset)


def _chunked(t: Tensor, chunk_size: int, token_dim: int) -> Tensor:
    """Pad the token axis to a multiple of ``chunk_size`` with zeros and split it into (chunks, chunk_size)."""
    n = t.shape[token_dim]
    pad = -n % chunk_size
    if pad:
        widths = [0, 0] * (-token_dim - 1) + [0, pad]
        t = F.pad(t, widths)
    return t.unflatten(token_dim, (t.shape[token_dim] // chunk_size, chunk_size))


def _memory_chunks(k, v, q, eta, log_alpha, beta, state, chunk_size, dgd, momentum, self_target, act):
    """Main memory over whole chunks starting at a chunk boundary (the last one may be partial)."""
    T = k.shape[-2]
    k, v, q = (_chunked(t, chunk_size, -2) for t in (k, v, q))
    eta, log_alpha, beta = (_chunked(t, chunk_size, -1) for t in (eta, log_alpha, beta))  # padding: no-op
    gates = ChunkGates.from_log_alpha(log_alpha)
    eta2 = effective_eta(eta, k, dgd)  # the first layer's input is the key: state independent
    tinv = None
    if dgd:
        lower = eta2[..., :, None] * gates.strict * (k @ k.transpose(-1, -2))
        eye = torch.eye(chunk_size, dtype=k.dtype, device=k.device).expand_as(lower)
        tinv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
    read = gates.causal * (q @ k.transpose(-1, -2))
    outs = []
    for j in range(k.shape[-3]):
        state = start_chunk(state, beta[..., j, 0], momentum)
        g, kj, qj = gates.at(j), k[..., j, :, :], q[..., j, :, :]
        target = self_generated_target(state.a1, state.a2, v[..., j, :, :], act) if self_target else v[..., j, :, :]
        u1, d1, _, d2 = inner_grads(state.a1, state.a2, kj, target, act, dgd)
        w2, y2, _ = _gated_step(state.w2, kj, d2, qj, eta2[..., j, :], g, dgd,
                                 None if tinv is None else tinv[..., j, :, :], read[..., j, :, :])
        w1, y1, _ = _gated_step(state.w1, u1, d1, activation(y2, act), effective_eta(eta[..., j, :], u1, dgd), g,
                                dgd)
        state = _advance(state, w1, w2)
        outs.append(qj + y1)
    state.offset = T % chunk_size
    return torch.cat(outs, dim=-2)[..., :T, :], state


def _kv_chunks(k_in, v_in, eta, log_alpha, beta, state, chunk_size, dgd, momentum, act):
    """Key/value memories over whole chunks starting at a chunk boundary (the last one may be partial)."""
    T = k_in.shape[-2]
    k_in, v_in = (_chunked(t, chunk_size, -2) for t in (k_in, v_in))
    eta, log_alpha, beta = (_chunked(t, chunk_size, -1) for t in (eta, log_alpha, beta))
    gates = ChunkGates.from_log_alpha(log_alpha)
    ks, vs = [], []
    for j in range(k_in.shape[-3]):
        state = start_chunk(state, beta[..., j, 0], momentum)
        a1, a2, g, ej = state.a1, state.a2, gates.at(j), eta[..., j, :]
        k = l2norm(memory_forward(a1[0], a2[0], k_in[..., j, :, :], act))
        v = memory_forward(a1[1], a2[1], v_in[..., j, :, :], act)
        u1, d1, _, d2 = inner_grads(a1, a2, k, self_generated_target(a1, a2, v, act), act, dgd)
        w2, _, _ = _gated_step(state.w2, k.expand(d1.shape), d2, None, effective_eta(ej, k, dgd), g, dgd)
        w1, _, _ = _gated_step(state.w1, u1, d1, None, effective_eta(ej, u1, dgd), g, dgd)
        state = _advance(state, w1, w2)
        ks.append(k)
        vs.append(v)
    state.offset = T % chunk_size
    return torch.cat(ks, dim=-2)[..., :T, :], torch.cat(vs, dim=-2)[..., :T, :], state


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
    linear: LinearStep = linear_chunk,
) -> tuple[Tensor, MemoryState]:
    """Chunk-parallel equivalent of :func:`hope.ops.dgd.naive.dgd_memory_naive` (same arguments).

    ``linear`` runs one segment of one weight matrix (:func:`linear_chunk`, or the Triton kernel's drop-in).
    """
    check_inputs(chunk_size, k=k, v=v, q=q)
    log_alpha = torch.log(alpha)
    T = k.shape[-2]
    end, outs = _generic_end(T, state.offset, chunk_size, linear), []
    for s, e in segments(end, state.offset, chunk_size):
        if state.offset == 0:
            state = start_chunk(state, beta[..., s], momentum)
        vs = v[..., s:e, :]
        target = self_generated_target(state.a1, state.a2, vs, act) if self_target else vs
        offset = (state.offset + e - s) % chunk_size
        state, o = _mlp_segment(state, k[..., s:e, :], target, q[..., s:e, :], eta[..., s:e],
                                log_alpha[..., s:e], dgd, act, linear)
        state.offset = offset
        outs.append(o)
    if end < T:
        o, state = _memory_chunks(k[..., end:, :], v[..., end:, :], q[..., end:, :], eta[..., end:],
                                  log_alpha[..., end:], beta[..., end:], state, chunk_size, dgd, momentum,
                                  self_target, act)
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
    linear: LinearStep = linear_chunk,
) -> tuple[Tensor, Tensor, MemoryState]:
    """Chunk-parallel equivalent of :func:`hope.ops.dgd.naive.smt_kv_naive` (same arguments, ``linear`` as in
    :func:`dgd_memory_chunk`)."""
    check_inputs(chunk_size, k_in=k_in, v_in=v_in)
    log_alpha = torch.log(alpha)
    T = k_in.shape[-2]
    end, ks, vs = _generic_end(T, state.offset, chunk_size, linear), [], []
    for s, e in segments(end, state.offset, chunk_size):
        if state.offset == 0:
            state = start_chunk(state, beta[..., s], momentum)
        a1, a2 = state.a1, state.a2
        k = l2norm(memory_forward(a1[0], a2[0], k_in[..., s:e, :], act))
        v = memory_forward(a1[1], a2[1], v_in[..., s:e, :], act)
        targets = self_generated_target(a1, a2, v, act)
        offset = (state.offset + e - s) % chunk_size
        state, _ = _mlp_segment(state, k, targets, None, eta[..., s:e], log_alpha[..., s:e], dgd, act, linear)
        state.offset = offset
        ks.append(k)
        vs.append(v)
    if end < T:
        k, v, state = _kv_chunks(k_in[..., end:, :], v_in[..., end:, :], eta[..., end:], log_alpha[..., end:],
                                 beta[..., end:], state, chunk_size, dgd, momentum, act)
        ks.append(k)
        vs.append(v)
    if not ks:
        return k_in.clone(), v_in.clone(), state
    return torch.cat(ks, dim=-2), torch.cat(vs, dim=-2), state
