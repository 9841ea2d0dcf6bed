"""Pieces shared by the naive and chunk DGD ops: memory state, the memory MLP and its analytic inner gradient.

A memory is the 2-layer residual MLP of paper Eq. 89, ``M(z) = z + W1 s(W2 z)`` with ``W2`` of shape
``(h, d)`` and ``W1`` of shape ``(d, h)``, one per head and per sequence. Tensors carry arbitrary leading
dimensions (``...``): ``(B, H)`` for one memory, ``(2, B, H)`` for the stacked key/value memories.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from hope.ops.common import activation, activation_grad, l2norm  # noqa: F401  (re-exported)


@dataclasses.dataclass(frozen=True)
class Flags:
    """The switches of the update rule, as the ops' keyword arguments of the same names (docs/semantics.md)."""

    dgd: bool = True
    momentum: bool = True
    self_target: bool = True
    act: str = "silu"
    damping: bool = True
    unit_target: bool = True
    velocity_decay: bool = True


@dataclasses.dataclass
class MemoryState:
    """In-context state of a (bank of) MLP memories.

    ``w1``/``w2``: the current weights (after the last processed token). ``a1``/``a2``: the anchor, i.e. the
    state at the start of the current chunk, where keys, targets and inner gradients are evaluated (Eq. 91).
    ``v1``/``v2``: the running momentum velocity (None when momentum is off). ``offset``: tokens already
    processed in the current chunk (0 means the next token opens a new chunk).
    """

    w1: Tensor
    w2: Tensor
    a1: Tensor
    a2: Tensor
    v1: Tensor | None
    v2: Tensor | None
    offset: int = 0

    @classmethod
    def from_params(cls, w1: Tensor, w2: Tensor, batch_size: int, momentum: bool) -> MemoryState:
        """Fresh per-sequence state from meta-learned initial weights ``w1 (..., d, h)``, ``w2 (..., h, d)``.

        The initial weights are broadcast over the batch (as views, so the outer gradient reaches them).
        ``w1``/``w2`` with leading dims ``lead`` give state tensors of shape ``(*lead[:-1], B, lead[-1], ...)``
        when ``lead`` has the head dim last, e.g. ``(H, d, h) -> (B, H, d, h)`` and ``(2, H, d, h) ->
        (2, B, H, d, h)``.
        """

        def per_sequence(w: Tensor) -> Tensor:
            w = w.unsqueeze(-4)  # batch axis just before the head axis
            shape = list(w.shape)
            shape[-4] = batch_size
            return w.expand(shape)

        w1b, w2b = per_sequence(w1), per_sequence(w2)
        v1 = torch.zeros_like(w1b) if momentum else None
        v2 = torch.zeros_like(w2b) if momentum else None
        return cls(w1b, w2b, w1b, w2b, v1, v2, 0)

    def detach(self) -> MemoryState:
        """The same state cut from the autograd graph (for truncated back-propagation between calls)."""

        def d(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach()

        return MemoryState(d(self.w1), d(self.w2), d(self.a1), d(self.a2), d(self.v1), d(self.v2), self.offset)


def memory_forward(w1: Tensor, w2: Tensor, x: Tensor, act: str, cache: dict | None = None) -> Tensor:
    """``M(x) = x + W1 s(W2 x)`` for row vectors ``x (..., n, d)``; ``cache`` receives ``z = W2 x`` and ``s(z)``."""
    z, h, hw = anchor_products(w1, w2, [x], act)[0][0]
    if cache is not None:
        cache.update(z=z, h=h)
    return x + hw


def anchor_products(a1: Tensor, a2: Tensor, xs: list[Tensor], act: str, read: Tensor | None = None):
    """The anchor MLP's products of several row blocks at once: for each ``x`` in ``xs`` the triple
    ``(z, s(z), s(z) a1^T)`` with ``z = x a2^T`` (what :func:`memory_forward` and :func:`inner_grads` compute),
    and ``read a2^T`` for an extra block ``read`` (or None). One product per layer instead of one per block."""
    sizes = [x.shape[-2] for x in xs]
    rows = xs if read is None else [*xs, read]
    z_all = (rows[0] if len(rows) == 1 else torch.cat(rows, -2)) @ a2.transpose(-1, -2)
    z = z_all[..., :sum(sizes), :]
    h = activation(z, act)
    ha = h @ a1.transpose(-1, -2)
    if len(xs) == 1:
        return [(z, h, ha)], None if read is None else z_all[..., sizes[0]:, :]
    out = list(zip(z.split(sizes, -2), h.split(sizes, -2), ha.split(sizes, -2)))
    return out, None if read is None else z_all[..., sum(sizes):, :]


def self_generated_target(a1: Tensor, a2: Tensor, v: Tensor, act: str, unit: bool = True) -> Tensor:
    """The self-generated target ``L2norm(M_0(v))`` of a memory at its anchor (paper Eq. 87/90).

    Normalized like the keys: a memory taught to map ``k`` to its own (unnormalized) output at ``v`` feeds its
    growth back into its next target and diverges geometrically (docs/semantics.md, SMT item 6).
    ``unit=False``: the raw ``M_0(v)`` (the ablation of that choice).
    """
    m = memory_forward(a1, a2, v, act)
    return l2norm(m) if unit else m


def inner_grads(a1: Tensor, a2: Tensor, k: Tensor, target: Tensor, act: str, dgd: bool = True,
                cache: dict | None = None, damping: bool = True, first: tuple[Tensor, Tensor, Tensor] | None = None):
    """Layer inputs ``u`` and error terms ``e`` of the inner loss ``0.5 ||M(k) - target||^2``, per layer.

    Evaluated at the anchor ``(a1, a2)`` for keys ``k (..., n, d)``; returns ``(u1, e1, u2, e2)`` for ``W1`` and
    ``W2``. With ``dgd=False`` ``e`` is the output gradient ``delta`` (the weight gradient is ``delta u^T``).
    With ``dgd=True`` ``e = -y*``, minus the layer's local target, so that the DGD step
    ``W_t = alpha W_{t-1} - eta' (W_{t-1} u + e) u^T`` regresses the current state onto ``y*``:
    ``y*_1 = target - k`` for the output layer (exact: its curvature is the identity) and
    ``y*_2 = z - delta_2 / (1 + ||J||_F^2)`` for the hidden layer, a damped (Levenberg-Marquardt) step in its
    output space with ``J = W1_0 diag(s'(z))``, so a large ``W1`` cannot make the hidden step overshoot;
    ``damping=False`` drops that factor (``y*_2 = z - delta_2``, the ablation of the choice).
    ``cache``: a dict that receives the intermediates :func:`hope.ops.dgd.vjp.inner_grads_vjp` needs.
    ``first``: ``(z, s(z), s(z) a1^T)`` when the caller computed them (:func:`anchor_products`).
    """
    z, h, ha = anchor_products(a1, a2, [k], act)[0][0] if first is None else first
    r = k + ha - target
    slope = activation_grad(z, act)
    ra = r @ a1
    delta2 = ra * slope
    if cache is not None:
        cache.update(z=z, h=h, r=r, slope=slope, ra=ra, delta2=delta2)
    if not dgd:
        return h, r, k, delta2
    if not damping:
        return h, k - target, k, delta2 - z
    sq = (a1 * a1).sum(-2)
    den = 1 + (slope * slope) @ sq[..., :, None]  # 1 + ||W1_0 diag(s'(z_t))||_F^2, (..., n, 1)
    if cache is not None:
        cache.update(sq=sq, den=den)
    return h, k - target, k, delta2 / den - z


def open_chunk(w1: Tensor, w2: Tensor, v1: Tensor | None, v2: Tensor | None, beta: Tensor, momentum: bool):
    """Momentum at a chunk start on bare tensors: ``V <- beta V``, ``W <- W + V``; returns ``(w1, w2, v1, v2)``
    (the new weights are the chunk's anchors). ``beta``: the gate of the chunk's first token."""
    if not momentum:
        return w1, w2, v1, v2
    b = beta[..., None, None]
    v1, v2 = b * v1, b * v2
    return w1 + v1, w2 + v2, v1, v2


def collect_velocity(v: Tensor | None, w_new: Tensor, w_old: Tensor, alpha: Tensor | None = None) -> Tensor | None:
    """Heavy-ball momentum: the velocity collects the change of the weights (None when momentum is off).

    ``alpha`` (the token's retention, broadcast over the matrix): collect the step ``w_new - alpha w_old`` only,
    without the retention decay (``velocity_decay=False``; Titans Eq. 9-10, where forgetting acts on the
    memory and not on its momentum)."""
    if v is None:
        return None
    return v + (w_new - (w_old if alpha is None else alpha[..., None, None] * w_old))


def start_chunk(state: MemoryState, beta: Tensor, momentum: bool) -> MemoryState:
    """Open a chunk: apply momentum (:func:`open_chunk`) and set the anchor to the result."""
    w1, w2, v1, v2 = open_chunk(state.w1, state.w2, state.v1, state.v2, beta, momentum)
    return MemoryState(w1, w2, w1, w2, v1, v2, state.offset)


def check_inputs(chunk_size: int, **tensors: Tensor) -> None:
    """Clear errors for shapes and chunk sizes the ops do not support."""
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    for name, t in tensors.items():
        if t is not None and not torch.is_floating_point(t):
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
