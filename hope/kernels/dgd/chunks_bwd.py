"""The one-launch Triton backward of the chunk driver's main memory (``dgd_memory``), over all chunks.

``dgd_chunks_bwd_kernel`` is the backward of ``chunks_fwd.dgd_chunks_fwd_kernel`` with the same layout: one program
per memory, which walks the chunks in reverse and carries the cotangents of the state ``(W1, W2, V1, V2)`` in
registers from chunk to chunk (the driver's loop, ``hope.ops.dgd.chunk_loop.DGDChunks.backward``, in one launch).
Per chunk it loads the chunk's start state (written by the forward kernel), recomputes the chunk's forward with the
forward's helpers (momentum opening, target, inner gradients at the anchor, the two gated steps' solves and the
hidden read-out) and back-propagates it analytically; the VJPs are those of ``hope/ops/dgd/vjp.py``:

* the velocity ``V_end = V + W_end - W_start`` (with momentum): ``dW_end += dV_end``, ``dW_start -= dV_end``;
* the two gated steps (``bwd._gated_step_vjp``: ``eta' = eta / (1 + eta |u|^2)``, the log-alpha gates, the
  UT/WY solve), the read-out ``q + W1_t s(W2_t q_t)`` (``s'`` between the layers);
* the inner gradients at the anchor (:func:`_inner_grads_vjp`, with ``s''`` and the damping), the self-generated
  target ``L2norm(M_0(v))`` (:func:`_mlp_vjp`, :func:`_l2norm_vjp`; paper Eq. 87/90);
* the opening of the chunk ``V <- beta V; W <- W + V`` (``start_chunk_vjp``; the anchors are the opened weights),
  except for the first chunk of a call that continues an open one (``CONT``: no opening, the anchors are inputs and
  get their own cotangents).

The key/value memories (``derive``) are not covered; the wrapper (``op.chunks_backward``) declines them and the
driver runs its loop. All arithmetic is fp32 (loads are up-cast).
"""

from __future__ import annotations

import triton
import triton.language as tl

from hope.kernels.dgd.bwd import _gated_step_vjp
from hope.kernels.dgd.chunks_fwd import (
    _act,
    _act2,
    _gated_read,
    _inner_grads,
    _load_mat,
    _load_state,
    _mat_offsets,
    _open,
    _store_mat,
    _target,
)
from hope.kernels.dgd.fwd import _chunk_gates, _gated_solve, _load_tokens, _staged


@triton.jit
def _l2norm_vjp(x, g):
    """Cotangent of the rows of ``x`` for ``y = x / sqrt(|x|^2 + eps)`` (``hope.ops.dgd.vjp.l2norm_vjp``)."""
    rs = tl.rsqrt(tl.sum(x * x, 1) + 1e-6)
    return rs[:, None] * g - x * (rs * rs * rs * tl.sum(g * x, 1))[:, None]


@triton.jit
def _mlp_vjp(A1, A2, X, G, ACT: tl.constexpr, DOT_PREC: tl.constexpr, STAGE: tl.constexpr):
    """Cotangents ``(X, A1, A2)`` of ``M(x) = x + A1 s(A2 x)`` (paper Eq. 89) given ``G`` for its rows
    (``hope.ops.dgd.vjp.memory_forward_vjp``)."""
    h, slope = _act(tl.dot(X, tl.trans(_staged(A2, STAGE)), input_precision=DOT_PREC), ACT)
    gz = tl.dot(G, _staged(A1, STAGE), input_precision=DOT_PREC) * slope
    gx = G + tl.dot(gz, _staged(A2, STAGE), input_precision=DOT_PREC)
    return gx, tl.dot(tl.trans(G), h, input_precision=DOT_PREC), tl.dot(tl.trans(gz), X, input_precision=DOT_PREC)


@triton.jit
def _inner_grads_vjp(A1, A2, K, z, h, slope, r, ra, den, g_u1, g_e1, g_e2, ACT: tl.constexpr, DGD: tl.constexpr,
                     DAMPING: tl.constexpr, DOT_PREC: tl.constexpr, STAGE: tl.constexpr):
    """Cotangents ``(K, target, A1, A2)`` of ``chunks_fwd._inner_grads`` given those of ``u1 = h``, ``e1`` and
    ``e2`` (``hope.ops.dgd.vjp.inner_grads_vjp``); ``z, h, slope, r, ra, den``: the forward's intermediates."""
    g_slope = tl.zeros_like(z)
    g_a1 = tl.zeros_like(A1)
    if DGD:
        if DAMPING:  # e2 = delta2 / den - z, den = 1 + sum_j s'(z_j)^2 |A1[:, j]|^2
            g_delta2 = g_e2 / den[:, None]
            g_curv = -tl.sum(g_e2 * ra * slope, 1) / (den * den)
            g_slope = 2.0 * slope * g_curv[:, None] * tl.sum(A1 * A1, 0)[None, :]
            g_a1 = 2.0 * A1 * tl.sum(slope * slope * g_curv[:, None], 0)[None, :]
        else:
            g_delta2 = g_e2
        g_z = -g_e2
        g_k = g_e1  # e1 = K - target
        g_target = -g_e1
        g_r = tl.zeros_like(K)
    else:  # e1 = r, e2 = delta2
        g_delta2 = g_e2
        g_z = tl.zeros_like(z)
        g_k = tl.zeros_like(K)
        g_target = tl.zeros_like(K)
        g_r = g_e1
    # delta2 = (r A1) o s'(z), r = K + h A1^T - target, h = s(z), z = K A2^T
    g_ra = g_delta2 * slope
    g_slope += g_delta2 * ra
    g_r += tl.dot(g_ra, tl.trans(_staged(A1, STAGE)), input_precision=DOT_PREC)
    g_a1 += tl.dot(tl.trans(r), g_ra, input_precision=DOT_PREC) + tl.dot(tl.trans(g_r), h, input_precision=DOT_PREC)
    g_h = g_u1 + tl.dot(g_r, _staged(A1, STAGE), input_precision=DOT_PREC)
    g_z += g_h * slope + g_slope * _act2(z, ACT)
    g_k += g_r + tl.dot(g_z, _staged(A2, STAGE), input_precision=DOT_PREC)
    return g_k, g_target - g_r, g_a1, tl.dot(tl.trans(g_z), K, input_precision=DOT_PREC)


@triton.jit
def dgd_chunks_bwd_kernel(
    k_ptr, v_ptr, q_ptr, eta_ptr, la_ptr, beta_ptr,  # forward inputs: (N, NC, C, D) tokens, (N, NC, C), (N, NC)
    w1s_ptr, w2s_ptr, v1s_ptr, v2s_ptr,  # (N, NC, ...) chunk-start states written by the forward
    a1_ptr, a2_ptr,  # (N, ...) the anchors of the continued chunk (CONT)
    gout_ptr, gw1_ptr, gw2_ptr, gv1_ptr, gv2_ptr, ga1_ptr, ga2_ptr,  # cotangents of the read-out, end state, anchors
    dk_ptr, dv_ptr, dq_ptr, deta_ptr, dla_ptr, dbeta_ptr,  # cotangents of the inputs (shapes as the inputs)
    dw1_ptr, dw2_ptr, dv1_ptr, dv2_ptr, da1_ptr, da2_ptr,  # (N, ...) cotangents of the incoming state, anchors
    NC, C, D, HID,
    ACT: tl.constexpr, DGD: tl.constexpr, DAMPING: tl.constexpr, SELF_TARGET: tl.constexpr, UNIT: tl.constexpr,
    MOMENTUM: tl.constexpr, CONT: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, BH: tl.constexpr,
    DOT_PREC: tl.constexpr, STAGE: tl.constexpr,
):
    """Grid ``(N,)``: all ``NC`` chunks of memory ``i`` in reverse (with ``CONT`` the first one continues an open
    chunk from the anchors ``a1, a2``)."""
    i = tl.program_id(0).to(tl.int64)
    S = D * HID
    m1 = _mat_offsets(D, HID, BD, BH)[1]  # the entries of W1 and W2 (not the blocks' padding)
    m2 = _mat_offsets(HID, D, BH, BD)[1]
    gW1 = _load_mat(gw1_ptr + i * S, D, HID, BD, BH)  # the state's cotangents at the end of chunk j
    gW2 = _load_mat(gw2_ptr + i * S, HID, D, BH, BD)
    if MOMENTUM:
        gV1 = _load_mat(gv1_ptr + i * S, D, HID, BD, BH)
        gV2 = _load_mat(gv2_ptr + i * S, HID, D, BH, BD)
    else:
        gV1 = tl.zeros_like(gW1)
        gV2 = tl.zeros_like(gW2)
    gA1 = _load_mat(ga1_ptr + i * S, D, HID, BD, BH)  # the anchors' cotangents: the last chunk's are an output
    gA2 = _load_mat(ga2_ptr + i * S, HID, D, BH, BD)
    if CONT:
        A1in = _load_mat(a1_ptr + i * S, D, HID, BD, BH)
        A2in = _load_mat(a2_ptr + i * S, HID, D, BH, BD)
    t = tl.arange(0, BT)
    dd = tl.arange(0, BD)
    omask = (t[:, None] < C) & (dd[None, :] < D)
    for jj in range(NC):
        j = NC - 1 - jj
        c = i * NC + j
        # ---- recompute chunk j from its start state (the forward kernel's _open and _learn, step by step)
        W1s, W2s, V1s, V2s, _, _ = _load_state(w1s_ptr + c * S, w2s_ptr + c * S, v1s_ptr + c * S, v2s_ptr + c * S,
                                               w1s_ptr, w2s_ptr, D, HID, False, MOMENTUM, BD, BH)
        if not CONT:
            A1in = W1s
            A2in = W2s
        opened = (j > 0) | (not CONT)
        W1, W2, V1, V2, A1, A2 = _open(W1s, W2s, V1s, V2s, A1in, A2in, beta_ptr + c, opened, MOMENTUM)
        tok = c * C * D
        K = _load_tokens(k_ptr + tok, C, D, BT, BD, 0)
        Vt = _load_tokens(v_ptr + tok, C, D, BT, BD, 0)
        Q = _load_tokens(q_ptr + tok, C, D, BT, BD, 0)
        eta, _, g, gp, gl = _chunk_gates(eta_ptr + c * C, la_ptr + c * C, C, BT)
        target, m = _target(A1, A2, Vt, ACT, SELF_TARGET, UNIT, DOT_PREC, STAGE)
        u1, e1, e2, z, slope, r, ra, den = _inner_grads(A1, A2, K, target, ACT, DGD, DAMPING, DOT_PREC, STAGE)
        p2, GD2, AA2, P2, Ti2, B2, C2 = _gated_solve(W2, K, e2, eta, g, gp, C, DGD, BT, DOT_PREC, STAGE)
        y2 = _gated_read(W2, K, Q, C2, g, BT, DOT_PREC, STAGE)
        x1, sx1 = _act(y2, ACT)
        p1, GD1, AA1, P1, Ti1, B1, C1 = _gated_solve(W1, u1, e1, eta, g, gp, C, DGD, BT, DOT_PREC, STAGE)
        # ---- back-propagate it
        gout = _load_tokens(gout_ptr + tok, C, D, BT, BD, 0)
        if MOMENTUM:  # V_end = V + W_end - W (W: the opened weights)
            gW1 = gW1 + gV1
            gW2 = gW2 + gV2
        dW1, de1, du1, dx1, deta, dla = _gated_step_vjp(u1, e1, W1, x1, eta, p1, g, gp, gl, GD1, AA1, P1, Ti1, B1,
                                                        C1, gW1, gout, gW1, C, DGD, True, False, BT, DOT_PREC,
                                                        STAGE)
        dW2, de2, dK2, dQ2, deta2, dla2 = _gated_step_vjp(K, e2, W2, Q, eta, p2, g, gp, gl, GD2, AA2, P2, Ti2, B2,
                                                          C2, gW2, dx1 * sx1, gW2, C, DGD, True, False, BT,
                                                          DOT_PREC, STAGE)
        g_k, g_t, ga1, ga2 = _inner_grads_vjp(A1, A2, K, z, u1, slope, r, ra, den, du1, de1, de2, ACT, DGD,
                                              DAMPING, DOT_PREC, STAGE)
        if SELF_TARGET:
            if UNIT:
                g_m = _l2norm_vjp(m, g_t)
            else:
                g_m = g_t
            g_v, ma1, ma2 = _mlp_vjp(A1, A2, Vt, g_m, ACT, DOT_PREC, STAGE)
            ga1 += ma1
            ga2 += ma2
        else:
            g_v = g_t
        tl.store(dk_ptr + tok + t[:, None] * D + dd[None, :], (g_k + dK2).to(dk_ptr.dtype.element_ty), mask=omask)
        tl.store(dv_ptr + tok + t[:, None] * D + dd[None, :], g_v.to(dv_ptr.dtype.element_ty), mask=omask)
        tl.store(dq_ptr + tok + t[:, None] * D + dd[None, :], (gout + dQ2).to(dq_ptr.dtype.element_ty), mask=omask)
        tl.store(deta_ptr + c * C + t, (deta + deta2).to(deta_ptr.dtype.element_ty), mask=t < C)
        tl.store(dla_ptr + c * C + t, (dla + dla2).to(dla_ptr.dtype.element_ty), mask=t < C)
        # the chunk's start weights W (both steps start there) and its anchors
        gA1 += ga1
        gA2 += ga2
        if MOMENTUM:  # W's share of the velocity (gV: still the end velocity's cotangent)
            dW1 -= gV1
            dW2 -= gV2
        # opened: W = A = W_s + beta V_s, V = beta V_s; else W = W_s, V = V_s and the anchors are the inputs'
        gO1 = dW1 + tl.where(opened, gA1, 0.0)
        gO2 = dW2 + tl.where(opened, gA2, 0.0)
        gA1 = tl.where(opened, 0.0, gA1)
        gA2 = tl.where(opened, 0.0, gA2)
        if MOMENTUM:
            gv1 = gO1 + gV1  # the opened velocity: its own term in V_end and its share of W
            gv2 = gO2 + gV2
            db = tl.sum(tl.sum(gv1 * V1s, 1), 0) + tl.sum(tl.sum(gv2 * V2s, 1), 0)
            tl.store(dbeta_ptr + c, tl.where(opened, db, 0.0).to(dbeta_ptr.dtype.element_ty))
            b = tl.load(beta_ptr + c).to(tl.float32)
            gV1 = tl.where(m1 & opened, b * gv1, tl.where(m1, gV1, 0.0))
            gV2 = tl.where(m2 & opened, b * gv2, tl.where(m2, gV2, 0.0))
        gW1 = tl.where(m1, gO1, 0.0)  # padding entries stay zero
        gW2 = tl.where(m2, gO2, 0.0)
    _store_mat(dw1_ptr + i * S, gW1, D, HID, BD, BH)
    _store_mat(dw2_ptr + i * S, gW2, HID, D, BH, BD)
    if MOMENTUM:
        _store_mat(dv1_ptr + i * S, gV1, D, HID, BD, BH)
        _store_mat(dv2_ptr + i * S, gV2, HID, D, BH, BD)
    if CONT:
        _store_mat(da1_ptr + i * S, gA1, D, HID, BD, BH)
        _store_mat(da2_ptr + i * S, gA2, HID, D, BH, BD)
