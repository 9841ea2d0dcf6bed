"""CMS level state and the analytic gradient of its associative inner objective.

A level is a SwiGLU MLP ``MLP(x) = W_down (silu(W_gate x) * (W_up x))`` whose weights theta are updated in
context every ``C`` tokens by a summed gradient step (paper Eq. 31, as fixed in DESIGN.md section 3):
``theta_{j+1} = theta_j - eta * sum_{t in chunk j} grad l(theta_j; x_t)``, with the associative objective
``l = 0.5 ||MLP_theta(k_t) - v_t||^2`` with unit keys and values ``k_t = L2norm(W_k x_t)``,
``v_t = L2norm(W_v x_t)`` (TTT/LaCT style, paper_spec.md section 2.6 option (b)): unit vectors bound the
curvature of the summed step whatever the width, so the level does not diverge on long streams.

The state keeps ``W_gate`` and ``W_up`` stacked as ``w_in = [W_gate; W_up]`` so one matmul serves both.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from hope.ops.common import activation_grad


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

    @classmethod
    def from_weights(cls, w_gate: Tensor, w_up: Tensor, w_down: Tensor) -> CMSLevelState:
        return cls(torch.cat([w_gate, w_up], dim=-2), w_down)

    @property
    def w_gate(self) -> Tensor:
        return self.w_in[..., : self.w_out.shape[-1], :]

    @property
    def w_up(self) -> Tensor:
        return self.w_in[..., self.w_out.shape[-1] :, :]

    @property
    def w_down(self) -> Tensor:
        return self.w_out

    def detach(self) -> CMSLevelState:
        """The same state cut from the autograd graph."""

        def d(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach()

        return CMSLevelState(d(self.w_in), d(self.w_out), d(self.g_in), d(self.g_out), self.offset)


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
    slope = activation_grad(g, "silu")
    d_in = torch.cat([da * u * slope, da * g * sig], dim=-1).transpose(-1, -2) @ keys
    return d_in, d_out, da, slope


def assoc_grads(state: CMSLevelState, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of ``sum_t 0.5 ||MLP(k_t) - v_t||^2`` w.r.t. ``(w_in, w_out)`` for ``keys``, ``values``
    ``(B, n, D)``, summed over tokens."""
    pred, acts = fused_swiglu(state.w_in, state.w_out, keys)
    return assoc_grads_from(keys, pred - values, state.w_out, acts)


def accumulate(state: CMSLevelState, grads: tuple[Tensor, Tensor], n: int, eta: Tensor,
               chunk_size: int) -> CMSLevelState:
    """Add a segment's summed gradient; at the end of a chunk take the step and clear the sum."""
    d_in, d_out = grads
    if state.g_in is not None:
        d_in, d_out = state.g_in + d_in, state.g_out + d_out
    offset = (state.offset + n) % chunk_size
    if offset == 0:
        return CMSLevelState(state.w_in - eta * d_in, state.w_out - eta * d_out, None, None, 0)
    return CMSLevelState(state.w_in, state.w_out, d_in, d_out, offset)


def check_level_inputs(x: Tensor, chunk_size: int) -> None:
    """Clear errors for unsupported inputs."""
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"CMS chunk_size must be a positive int (or None for a static level), got {chunk_size!r}")
    if x.dim() != 3:
        raise ValueError(f"CMS input must be (batch, time, dim), got shape {tuple(x.shape)}")
