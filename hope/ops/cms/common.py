"""CMS level state and the analytic gradient of its associative inner objective.

A level is a SwiGLU MLP ``MLP(x) = W_down (silu(W_gate x) * (W_up x))`` whose weights theta are updated in
context every ``C`` tokens by a summed gradient step (paper Eq. 31, as fixed in DESIGN.md section 3):
``theta_{j+1} = theta_j - eta * sum_{t in chunk j} grad l(theta_j; x_t)``, with the associative objective
``l = 0.5 ||MLP_theta(k_t) - v_t||^2`` with unit keys and values ``k_t = L2norm(W_k x_t)``,
``v_t = L2norm(W_v x_t)`` (TTT/LaCT style, paper_spec.md section 2.6 option (b)): unit vectors bound the
curvature of the summed step whatever the width, so the level does not diverge on long streams.

The state keeps ``W_gate`` and ``W_up`` stacked as ``w_in = [W_gate; W_up]`` so one matmul serves both.

Other MLP forms, so that a level can be seeded exactly from a pretrained model's MLP (ad-hoc level stacking,
paper section 7.3): any activation of ``hope.ops.common.ACTIVATIONS`` for the gate, a plain (ungated) MLP
``W_down s(W_up x + b_up) + b_down`` (GPT-2), and static biases (outer-trained, never updated in context).
:func:`read_level` and :func:`level_grads` handle every form; the SwiGLU form without biases also has the
whole-chunk fast path of ``chunk_loop.py``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from hope.ops.common import activation, activation_grad, l2norm, silu_grad


@dataclasses.dataclass
class CMSLevelState:
    """Fast weights of one level for each sequence, the gradient summed so far in the current chunk
    (None while it is empty) and ``offset``, the number of tokens already in the current chunk.

    ``w_in = [W_gate; W_up]`` ``(2F, D)`` and ``w_out = W_down`` ``(D, F)`` are views of the parameters until
    the first update makes them per sequence (``(B, 2F, D)``); both shapes broadcast in the same matmuls.
    """

    w_in: Tensor
    w_out: Tensor
    g_in: Tensor | None = None
    g_out: Tensor | None = None
    offset: int = 0
    b_in: Tensor | None = None  # static biases (``(2F,)`` or ``(F,)`` and ``(D,)``), shared by all sequences
    b_out: Tensor | None = None
    act: str = "silu"
    gated: bool = True

    @classmethod
    def from_weights(cls, w_gate: Tensor | None, w_up: Tensor, w_down: Tensor, b_gate: Tensor | None = None,
                     b_up: Tensor | None = None, b_down: Tensor | None = None, act: str = "silu") -> CMSLevelState:
        """A gated level (``w_gate`` given) or a plain one (``w_gate=None``); biases are all given or none."""
        gated = w_gate is not None
        b_in = None
        if b_up is not None:
            b_in = torch.cat([b_gate, b_up], dim=-1) if gated else b_up
        w_in = torch.cat([w_gate, w_up], dim=-2) if gated else w_up
        return cls(w_in, w_down, b_in=b_in, b_out=b_down, act=act, gated=gated)

    @property
    def is_swiglu(self) -> bool:
        """The default form (gated SiLU, no biases), which has the whole-chunk fast path."""
        return self.gated and self.act == "silu" and self.b_in is None and self.b_out is None

    @property
    def w_gate(self) -> Tensor | None:
        return self.w_in[..., : self.w_out.shape[-1], :] if self.gated else None

    @property
    def w_up(self) -> Tensor:
        return self.w_in[..., self.w_out.shape[-1] :, :] if self.gated else self.w_in

    @property
    def w_down(self) -> Tensor:
        return self.w_out

    def detach_sums(self) -> CMSLevelState:
        """The partial-chunk gradient sum as a constant (the first-order outer gradient); weights unchanged."""
        if self.g_in is None:
            return self
        return dataclasses.replace(self, g_in=self.g_in.detach(), g_out=self.g_out.detach())

    def detach(self) -> CMSLevelState:
        """The same state cut from the autograd graph."""

        def d(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach()

        return dataclasses.replace(self, w_in=d(self.w_in), w_out=d(self.w_out), g_in=d(self.g_in),
                                   g_out=d(self.g_out), b_in=d(self.b_in), b_out=d(self.b_out))


def assoc_keys_values(x: Tensor, w_key: Tensor, w_value: Tensor, unit: bool = True) -> tuple[Tensor, Tensor]:
    """Keys and values of the associative objective, ``L2norm(W_k x)`` and ``L2norm(W_v x)`` (docs/semantics.md,
    CMS item 1: unit keys and values bound the curvature of a level's summed step); ``unit=False``: the raw
    projections (the ablation of that choice)."""
    keys, values = x @ w_key.transpose(-1, -2), x @ w_value.transpose(-1, -2)
    return (l2norm(keys), l2norm(values)) if unit else (keys, values)


def swiglu(w_gate: Tensor, w_up: Tensor, w_down: Tensor, x: Tensor) -> Tensor:
    """``W_down (silu(W_gate x) * (W_up x))`` for rows ``x (..., n, D)``; weights may carry a batch dim."""
    return fused_swiglu(torch.cat([w_gate, w_up], dim=-2), w_down, x)[0]


def fused_swiglu(w_in: Tensor, w_out: Tensor, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """The SwiGLU output for rows ``x`` and the activations its gradient needs: ``(g, u, sigmoid(g), a)``."""
    g, u = (x @ w_in.transpose(-1, -2)).chunk(2, dim=-1)
    sig = torch.sigmoid(g)
    a = g * sig * u
    return a @ w_out.transpose(-1, -2), (g, u, sig, a)


def assoc_grads_from(keys: Tensor, residual: Tensor, w_out: Tensor, acts: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """Gradients of ``sum_t 0.5 ||MLP(k_t) - v_t||^2`` w.r.t. ``(w_in, w_out)`` summed over tokens, given the
    residual ``MLP(k) - v`` and the activations of :func:`fused_swiglu` at the keys. Written out analytically."""
    return assoc_grad_terms(keys, residual, w_out, acts)[:2]


def assoc_grad_terms(keys: Tensor, residual: Tensor, w_out: Tensor, acts: tuple[Tensor, ...]):
    """:func:`assoc_grads_from` and its intermediates: ``(d_in, d_out, da, slope)`` with ``da = residual W_down``
    the gradient at the hidden activation and ``slope = silu'(g)`` at the keys' gate pre-activations."""
    g, u, sig, a = acts
    d_out = residual.transpose(-1, -2) @ a
    da = residual @ w_out
    slope = silu_grad(g, sig)  # the forward's sigmoid, not a second one
    d_in = torch.cat([da * u * slope, da * g * sig], dim=-1).transpose(-1, -2) @ keys
    return d_in, d_out, da, slope


def read_level(state: CMSLevelState, x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The level's MLP at rows ``x`` in any form, and the activations :func:`level_grads` needs."""
    if state.is_swiglu:
        return fused_swiglu(state.w_in, state.w_out, x)
    h = x @ state.w_in.transpose(-1, -2)
    if state.b_in is not None:
        h = h + state.b_in
    if state.gated:
        g, u = h.chunk(2, dim=-1)
        a = activation(g, state.act) * u
    else:
        a = activation(h, state.act)
    out = a @ state.w_out.transpose(-1, -2)
    return (out if state.b_out is None else out + state.b_out), (h, a)


def level_grads(state: CMSLevelState, keys: Tensor, residual: Tensor, acts: tuple[Tensor, ...]
                ) -> tuple[Tensor, Tensor]:
    """:func:`assoc_grads_from` for any form: gradients w.r.t. ``(w_in, w_out)`` (the biases are static)."""
    if state.is_swiglu:
        return assoc_grads_from(keys, residual, state.w_out, acts)
    h, a = acts
    d_out = residual.transpose(-1, -2) @ a
    da = residual @ state.w_out
    if state.gated:
        g, u = h.chunk(2, dim=-1)
        dh = torch.cat([da * u * activation_grad(g, state.act), da * activation(g, state.act)], dim=-1)
    else:
        dh = da * activation_grad(h, state.act)
    return dh.transpose(-1, -2) @ keys, d_out


def assoc_grads(state: CMSLevelState, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of ``sum_t 0.5 ||MLP(k_t) - v_t||^2`` w.r.t. ``(w_in, w_out)`` for ``keys``, ``values``
    ``(B, n, D)``, summed over tokens."""
    pred, acts = read_level(state, keys)
    return level_grads(state, keys, pred - values, acts)


def accumulate(state: CMSLevelState, grads: tuple[Tensor, Tensor], n: int, eta: Tensor,
               chunk_size: int) -> CMSLevelState:
    """Add a segment's summed gradient; at the end of a chunk take the step and clear the sum."""
    d_in, d_out = grads
    if state.g_in is not None:
        d_in, d_out = state.g_in + d_in, state.g_out + d_out
    offset = (state.offset + n) % chunk_size
    if offset == 0:
        return dataclasses.replace(state, w_in=state.w_in - eta * d_in, w_out=state.w_out - eta * d_out, g_in=None,
                                   g_out=None, offset=0)
    return dataclasses.replace(state, g_in=d_in, g_out=d_out, offset=offset)


def check_level_inputs(x: Tensor, chunk_size: int) -> None:
    """Clear errors for unsupported inputs."""
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"CMS chunk_size must be a positive int (or None for a static level), got {chunk_size!r}")
    if x.dim() != 3:
        raise ValueError(f"CMS input must be (batch, time, dim), got shape {tuple(x.shape)}")
