"""The per-chunk step of one weight matrix, the piece of the DGD chunk algorithm a backend supplies.

The chunk driver (:mod:`hope.ops.dgd.chunk_loop`) computes everything that depends on the memory's MLP (keys,
targets, layer inputs ``u`` and error terms ``e`` at the anchor, momentum, the velocity) and hands each weight
matrix's linear recurrence over one chunk to a step object:

    ``forward(w, u, e, x, eta, hint) -> (w_end, y, ctx)``: the end state and the reads ``y_t = W_t x_t``;
    ``backward(ctx, g_wend, g_y, g_steps) -> StepGrads``: the cotangents of the forward's inputs.

``eta`` is the raw step (the step applies the proximal factor of :func:`hope.ops.dgd.linear.effective_eta`
itself). ``hint`` carries what the driver precomputed for all chunks at once: the gate products (used by
:class:`TorchStep`), the chunk's ``log alpha`` (used by the Triton step, ``hope.kernels.dgd.op``) and, for the
main memory's hidden layer, whose input is the state-independent key, the effective step, the inverse of the
triangular system and the masked query-key product; when the chunk opened (the start weights are its anchors),
also the products ``u w^T`` and ``x w^T`` the driver formed with the inner gradients. ``g_steps``: the
cotangent of the steps' sum ``sum_t c_t u_t^T`` when the velocity collects it (``velocity_decay=False``); a step
that cannot give it raises.

A step may also run the whole forward of the driver at once: an attribute ``chunks_forward`` (None, or absent,
when it cannot) called as ``chunks_forward(f, derive, cont, x1, x2, q, eta, log_alpha, beta, state, anchors)`` on
the driver's chunked flat inputs, returning :class:`FusedChunks` (or None to decline the call: the driver then
loops over ``forward``). The driver then keeps only the chunk-start states and recomputes each chunk with the
step's ``forward`` in the backward, right before back-propagating it.

After such a fused forward, a step may also run the whole backward at once: an attribute ``chunks_backward`` (None,
or absent, when it cannot) called as ``chunks_backward(f, derive, cont, x1, x2, q, eta, log_alpha, beta, starts,
anchors, g_outs, g_end, g_anchors)`` with the forward's arguments, the ``starts`` of its :class:`FusedChunks` and the
cotangents of the driver's outputs (``g_outs``: the read-out, or the keys and values; ``g_end``: the end state
``(w1, w2, v1, v2)``, velocities None without momentum; ``g_anchors``: the last chunk's anchors), returning
:class:`FusedGrads` (or None to decline the call: the driver then runs its recompute loop, with the same results).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from torch import Tensor

from hope.ops.dgd.linear import ChunkGates, effective_eta, gated_step
from hope.ops.dgd.vjp import effective_eta_vjp, gated_step_vjp


@dataclasses.dataclass
class StepHint:
    """What the driver precomputed for one chunk of one weight matrix (None: not available)."""

    gates: ChunkGates | None = None
    log_alpha: Tensor | None = None
    eta_eff: Tensor | None = None
    tinv: Tensor | None = None
    read: Tensor | None = None
    uw: Tensor | None = None  # u w^T and x w^T, when w is the chunk's anchor (computed with the inner gradients)
    xw: Tensor | None = None


@dataclasses.dataclass
class StepGrads:
    """Cotangents of a step's inputs; ``eta`` is None when the effective step came in the hint, and ``extra``
    holds those of the hint's tensors by name (gate fields, ``log_alpha``, ``eta_eff``, ``tinv``, ``read``)."""

    w: Tensor
    u: Tensor
    e: Tensor
    x: Tensor | None
    eta: Tensor | None
    extra: dict[str, Tensor]


@dataclasses.dataclass
class FusedChunks:
    """What a fused forward over all chunks returns, flat over the memories: ``outs`` the driver's outputs
    stacked over chunks (``(N, n_chunks, C, d)``: the read-out, or the keys and values), ``end`` the state
    ``(w1, w2, v1, v2)`` after the last chunk, ``anchors`` the last chunk's, and ``starts`` the state
    ``(w1, w2, v1, v2)`` at the start of every chunk (before it opens), ``(N, n_chunks, ...)``; velocities are
    None without momentum."""

    outs: tuple[Tensor, ...]
    end: tuple[Tensor, Tensor, Tensor | None, Tensor | None]
    anchors: tuple[Tensor, Tensor]
    starts: tuple[Tensor, Tensor, Tensor | None, Tensor | None]


@dataclasses.dataclass
class FusedGrads:
    """What a fused backward over all chunks returns, flat over the memories: ``inputs`` the cotangents of the
    driver's chunked inputs by name (``x1, x2, q, eta, log_alpha, beta``; missing or None where there is none),
    ``state`` those of the incoming ``(w1, w2, v1, v2)`` and ``anchors`` those of the incoming anchors of a
    continued chunk (None when the call opened its first chunk)."""

    inputs: dict[str, Tensor | None]
    state: tuple[Tensor, Tensor, Tensor | None, Tensor | None]
    anchors: tuple[Tensor | None, Tensor | None]


class ChunkStep(Protocol):
    """A per-chunk forward/backward pair (see the module docstring)."""

    name: str
    steps_sum: bool  # can it return the steps' sum and take its cotangent (``velocity_decay=False``)?
    uses_gates: bool  # does it read the gate products of the hint (else its ``log_alpha``)?

    def forward(self, w: Tensor, u: Tensor, e: Tensor, x: Tensor | None, eta: Tensor, dgd: bool,
                hint: StepHint) -> tuple[Tensor, Tensor | None, Any]: ...

    def steps(self, ctx: Any) -> Tensor: ...

    def backward(self, ctx: Any, g_wend: Tensor, g_y: Tensor | None, g_steps: Tensor | None) -> StepGrads: ...


class TorchStep:
    """The PyTorch step: :func:`hope.ops.dgd.linear.gated_step` and its analytic VJP."""

    name = "torch"
    steps_sum = True
    uses_gates = True

    def forward(self, w, u, e, x, eta, dgd, hint):
        eta_eff = effective_eta(eta, u, dgd) if hint.eta_eff is None else hint.eta_eff
        w_end, y, cache = gated_step(w, u, e, x, eta_eff, hint.gates, dgd, hint.tinv, hint.read, hint.uw,
                                        hint.xw)
        return w_end, y, (cache, hint, eta, dgd)

    def steps(self, ctx) -> Tensor:
        cache = ctx[0]
        return cache.c.transpose(-1, -2) @ cache.u

    def backward(self, ctx, g_wend, g_y, g_steps) -> StepGrads:
        cache, hint, eta, dgd = ctx
        s = gated_step_vjp(cache, hint.gates, dgd, g_wend, g_y, g_steps)
        extra = dict(s.gates)
        if s.tinv is not None:
            extra["tinv"] = s.tinv
        if s.read is not None:
            extra["read"] = s.read
        if hint.eta_eff is not None:
            extra["eta_eff"] = s.eta
            return StepGrads(s.w, s.u, s.e, s.x, None, extra)
        g_eta, g_u = effective_eta_vjp(eta, cache.u, s.eta, dgd)
        return StepGrads(s.w, s.u if g_u is None else s.u + g_u, s.e, s.x, g_eta, extra)


TORCH_STEP = TorchStep()
