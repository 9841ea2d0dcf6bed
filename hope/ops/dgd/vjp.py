"""Analytic vector-Jacobian products of the pieces of one chunk of the DGD memory update.

Each ``*_vjp`` takes the cotangents of a forward piece's outputs and returns those of its inputs; together
they back-propagate one chunk (``hope.ops.dgd.chunk_loop``) without the autograd graph, whose per-op overhead
dominates the chunk loop at small head sizes. Shapes follow the forward functions in
:mod:`hope.ops.dgd.common` and :mod:`hope.ops.dgd.linear`: rows are tokens, ``w (..., m, k)`` maps ``k`` to
``m``; the chunk loops call them on one flat batch axis, so no cotangent needs reducing over broadcasts.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from hope.ops.common import activation, activation_grad, activation_grad2, sum_of_products


def l2norm_vjp(x: Tensor, g: Tensor, eps: float = 1e-6) -> Tensor:
    """Cotangent of ``x`` for ``y = x / sqrt(|x|^2 + eps)`` (:func:`hope.ops.common.l2norm`)."""
    rs = torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)
    return rs * g - x * (rs * rs * rs) * (g * x).sum(-1, keepdim=True)


def memory_forward_vjp(w1: Tensor, w2: Tensor, x: Tensor, g: Tensor, act: str,
                       cache: dict | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Cotangents ``(x, w1, w2)`` of ``M(x) = x + W1 s(W2 x)`` given the output cotangent ``g`` (``cache``: the
    dict :func:`hope.ops.dgd.common.memory_forward` filled; recomputed when None)."""
    z = x @ w2.transpose(-1, -2) if cache is None else cache["z"]
    h = activation(z, act) if cache is None else cache["h"]
    gz = (g @ w1) * activation_grad(z, act)
    gx = g + gz @ w2
    return gx, g.transpose(-1, -2) @ h, gz.transpose(-1, -2) @ x


def inner_grads_vjp(cache: dict, a1: Tensor, a2: Tensor, k: Tensor, act: str, dgd: bool,
                    g_u1: Tensor, g_e1: Tensor, g_e2: Tensor,
                    damping: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cotangents ``(k, target, a1, a2)`` of :func:`hope.ops.dgd.common.inner_grads` given those of its
    outputs ``u1 = s(z)``, ``e1`` and ``e2`` (its output ``u2 = k`` is the caller's to add); ``cache`` is the
    dict the forward filled (with the same ``dgd`` and ``damping``)."""
    z, h, r, slope, ra = cache["z"], cache["h"], cache["r"], cache["slope"], cache["ra"]
    if dgd:
        if damping:
            sq, den = cache["sq"], cache["den"]
            g_delta2 = g_e2 / den
            g_curv = -(g_e2 * cache["delta2"]).sum(-1, keepdim=True) / (den * den)
            g_slope = 2 * slope * g_curv * sq[..., None, :]
            g_a1 = 2 * a1 * ((slope * slope) * g_curv).sum(-2)[..., None, :]
        else:
            g_delta2, g_slope, g_a1 = g_e2, 0, 0
        g_z, g_k, g_r = -g_e2, g_e1, None
        g_target = -g_e1
    else:
        g_delta2, g_slope, g_a1, g_z, g_k, g_r, g_target = g_e2, 0, 0, 0, 0, g_e1, 0
    g_ra = g_delta2 * slope
    g_slope = g_slope + g_delta2 * ra
    g_r = g_ra @ a1.transpose(-1, -2) if g_r is None else g_r + g_ra @ a1.transpose(-1, -2)
    g_a1 = g_a1 + r.transpose(-1, -2) @ g_ra + g_r.transpose(-1, -2) @ h
    g_h = g_u1 + g_r @ a1
    g_z = g_z + g_h * slope + g_slope * activation_grad2(z, act)
    g_k = g_k + g_r + g_z @ a2
    return g_k, g_target - g_r, g_a1, g_z.transpose(-1, -2) @ k


def effective_eta_vjp(eta: Tensor, u: Tensor, g: Tensor, dgd: bool) -> tuple[Tensor, Tensor | None]:
    """Cotangents ``(eta, u)`` of ``eta' = eta / (1 + eta |u|^2)`` (``u``: None when ``dgd=False``, eta' = eta)."""
    if not dgd:
        return g, None
    den = 1 + eta * (u * u).sum(-1)
    gd = g / (den * den)
    return gd, (-2 * eta * eta * gd)[..., None] * u


@dataclasses.dataclass
class GatedStepCache:
    """What the forward of one gated step (:func:`hope.ops.dgd.linear.gated_step`) keeps for its VJP."""

    w: Tensor
    u: Tensor
    e: Tensor
    x: Tensor | None
    eta: Tensor
    c: Tensor
    rhs: Tensor | None = None
    uw: Tensor | None = None
    uu: Tensor | None = None
    inv: Tensor | None = None  # the inverse of I + L, when the step computed it (no tinv given)
    tinv: Tensor | None = None
    xw: Tensor | None = None
    xu: Tensor | None = None
    read: Tensor | None = None
    read_given: bool = False


@dataclasses.dataclass
class GatedStepGrads:
    """Cotangents of the inputs of one gated step (None where the input was not used)."""

    w: Tensor
    u: Tensor
    e: Tensor
    x: Tensor | None
    eta: Tensor
    gates: dict[str, Tensor]
    tinv: Tensor | None = None
    read: Tensor | None = None


def gated_step_vjp(cache: GatedStepCache, gates, dgd: bool, g_wend: Tensor, g_y: Tensor | None,
                   g_steps: Tensor | None = None) -> GatedStepGrads:
    """Cotangents of one gated step's inputs given those of its end state ``g_wend``, read-out ``g_y`` and
    (``g_steps``, when the velocity collected it) the sum of its steps ``S = C^T U``.

    Forward (per token t, all inputs from the anchor): ``W_end = elast W + (eend o C)^T U``,
    ``Y = eg o (X W^T) + (causal o X U^T) C``, ``(I + L) C = R`` with ``L = eta' o strict o U U^T`` and
    ``R = -eta' o E - (eta' egp) o U W^T`` (``C = -eta o E`` without DGD).
    """
    w, u, c, eta = cache.w, cache.u, cache.c, cache.eta
    g_gates = {"elast": (w * g_wend).sum((-1, -2))[..., None]}
    ugw = u @ g_wend.transpose(-1, -2)
    g_c = gates.eend[..., None] * ugw
    g_gates["eend"] = (c * ugw).sum(-1)
    # the terms of the cotangents of W (as a^T b), U and X, each summed in one product at the end
    w_terms, u_terms, x_terms = [], [(c * gates.eend[..., None], g_wend)], []
    ut_terms = []  # terms a^T b of U's cotangent, summed in a product of a transposed left factor (no copy)
    if g_steps is not None:
        g_c = g_c + u @ g_steps.transpose(-1, -2)
        u_terms.append((c, g_steps))
    g_x = g_tinv = g_read = None
    if g_y is not None:
        eg_gy = gates.eg[..., None] * g_y
        x_terms.append((eg_gy, w))
        w_terms.append((eg_gy, cache.x))
        g_gates["eg"] = (g_y * cache.xw).sum(-1)
        g_rd = g_y @ c.transpose(-1, -2)
        g_c = g_c + cache.read.transpose(-1, -2) @ g_y
        if cache.read_given:
            g_read = g_rd
        else:
            g_gates["causal"] = g_rd * cache.xu
            g_xu = g_rd * gates.causal
            x_terms.append((g_xu, u))
            ut_terms.append((g_xu, cache.x))
    if dgd:
        if cache.tinv is not None:
            g_tinv = g_c @ cache.rhs.transpose(-1, -2)
            g_rhs = cache.tinv.transpose(-1, -2) @ g_c
        else:
            g_rhs = cache.inv.transpose(-1, -2) @ g_c
            g_lower = -(g_rhs @ c.transpose(-1, -2)).tril(-1)
            g_uu = g_lower * eta[..., None] * gates.strict
            g_gates["strict"] = g_lower * eta[..., None] * cache.uu
            g_eta = (g_lower * gates.strict * cache.uu).sum(-1)
            u_terms.append((g_uu, u))
            ut_terms.append((g_uu, u))
        g_egp_eta = -(g_rhs * cache.uw).sum(-1)
        g_gates["egp"] = g_egp_eta * eta
        g_eta = g_egp_eta * gates.egp if cache.tinv is not None else g_eta + g_egp_eta * gates.egp
        g_uw = -(eta * gates.egp)[..., None] * g_rhs
        u_terms.append((g_uw, w))
        w_terms.append((g_uw, u))
        g_gd = g_rhs
    else:
        g_gd, g_eta = g_c, 0
    g_w = gates.elast[..., None] * g_wend
    if w_terms:
        g_w = g_w + sum_of_products(w_terms, left_transposed=True)
    g_u = sum_of_products(u_terms)
    if ut_terms:
        g_u = g_u + sum_of_products(ut_terms, left_transposed=True)
    if x_terms:
        g_x = sum_of_products(x_terms)
    g_e = -eta[..., None] * g_gd
    g_eta = g_eta - (g_gd * cache.e).sum(-1)
    return GatedStepGrads(g_w, g_u, g_e, g_x, g_eta, g_gates, g_tinv, g_read)


def start_chunk_vjp(v_prev: Tensor | None, beta: Tensor, momentum: bool, g_anchor: Tensor,
                    g_velocity: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Cotangents ``(w_prev, v_prev, beta)`` of :func:`hope.ops.dgd.common.start_chunk` for one matrix, given
    those of the anchor ``A = W_prev + beta V_prev`` and of the velocity ``V = beta V_prev``."""
    if not momentum:
        return g_anchor, None, None
    g_v = g_anchor + g_velocity
    return g_anchor, beta[..., None, None] * g_v, (g_v * v_prev).sum((-1, -2))
