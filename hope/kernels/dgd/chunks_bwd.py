"""The one-launch Triton backward of the chunk driver over all chunks: ``dgd_chunks_bwd_kernel`` for the main memory
(``dgd_memory``), ``kv_chunks_bwd_kernel`` for the key/value memories (``smt_kv``, the driver's ``derive``).

Each is the backward of its forward in ``chunks_fwd.py`` with the same layout (one program per memory; one per key/
value pair, which learn each other's reads every chunk) and walks the chunks in reverse, carrying the cotangents of
the state ``(W1, W2, V1, V2)`` in registers from chunk to chunk (the driver's loop,
``hope.ops.dgd.chunk_loop.DGDChunks.backward``, in one launch). Per chunk it loads the chunk's start state (written by
the forward kernel), recomputes the chunk's forward with the forward's helpers (momentum opening, for the key/value
pair the reads ``L2norm(M_k(k~))`` and ``M_v(v~)`` at the anchors, target, inner gradients at the anchor, the two
gated steps' solves and the hidden read-out) and back-propagates it analytically (:func:`_learn_vjp` per memory,
:func:`_open_vjp` for the opening); the VJPs are those of ``hope/ops/dgd/vjp.py``:

* the velocity ``V_end = V + W_end - W_start`` (with momentum): ``dW_end += dV_end``, ``dW_start -= dV_end``;
* the two gated steps (``bwd._gated_step_vjp``: ``eta' = eta / (1 + eta |u|^2)``, the log-alpha gates, the
  UT/WY solve), the read-out ``q + W1_t s(W2_t q_t)`` (``s'`` between the layers; the main memory only);
* the inner gradients at the anchor (:func:`_inner_grads_vjp`, with ``s''`` and the damping), the self-generated
  target ``L2norm(M_0(v))`` (:func:`_mlp_vjp`, :func:`_l2norm_vjp`; paper Eq. 87/90);
* for the key/value pair, the reads: the keys' and values' cotangents collect the outputs' and both memories'
  (each learned both), then go through ``L2norm`` and ``M_k`` (to ``k~`` and the key memory's anchors) and ``M_v``
  (to ``v~`` and the value memory's anchors);
* the opening of the chunk ``V <- beta V; W <- W + V`` (``start_chunk_vjp``; the anchors are the opened weights),
  except for the first chunk of a call that continues an open one (``CONT``: no opening, the anchors are inputs and
  get their own cotangents).

All arithmetic is fp32 (loads are up-cast).
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
    _l2norm,
    _load_mat,
    _load_state,
    _mat_offsets,
    _mlp,
    _open,
    _store_mat,
    _store_state,
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
def _learn_vjp(W1, W2, A1, A2, K, Vt, Q, gout, gW1, gW2, gV1, gV2, eta_ptr, la_ptr, n,
               ACT: tl.constexpr, DGD: tl.constexpr, DAMPING: tl.constexpr, SELF_TARGET: tl.constexpr,
               UNIT: tl.constexpr, MOMENTUM: tl.constexpr, HAS_X: tl.constexpr, BT: tl.constexpr,
               DOT_PREC: tl.constexpr, STAGE: tl.constexpr):
    """Recompute one opened chunk of one memory (``chunks_fwd._learn``: target, inner gradients at the anchors
    ``A1, A2``, the two gated steps from ``W1, W2`` and, with ``HAS_X``, the hidden read of the queries ``Q``) and
    back-propagate it given the cotangents of its end state ``(gW1, gW2, gV1, gV2)`` and (``HAS_X``) of the
    read-out ``gout``. Returns the cotangents of the opened weights ``W1, W2`` (their share of the velocity
    included), of the keys ``K``, the values ``Vt``, the queries (the hidden read's share), ``eta``, ``log alpha``
    and of the anchors ``A1, A2``."""
    eta, _, g, gp, gl = _chunk_gates(eta_ptr, la_ptr, n, BT)
    target, m = _target(A1, A2, Vt, ACT, SELF_TARGET, UNIT, DOT_PREC, STAGE)
    u1, e1, e2, z, slope, r, ra, den = _inner_grads(A1, A2, K, target, ACT, DGD, DAMPING, DOT_PREC, STAGE)
    p2, GD2, AA2, P2, Ti2, B2, C2 = _gated_solve(W2, K, e2, eta, g, gp, n, DGD, BT, DOT_PREC, STAGE)
    if HAS_X:
        x1, sx1 = _act(_gated_read(W2, K, Q, C2, g, BT, DOT_PREC, STAGE), ACT)
    else:
        x1 = u1  # unread
    p1, GD1, AA1, P1, Ti1, B1, C1 = _gated_solve(W1, u1, e1, eta, g, gp, n, DGD, BT, DOT_PREC, STAGE)
    if MOMENTUM:  # V_end = V + W_end - W
        gW1 = gW1 + gV1
        gW2 = gW2 + gV2
    dW1, de1, du1, dx1, deta, dla = _gated_step_vjp(u1, e1, W1, x1, eta, p1, g, gp, gl, GD1, AA1, P1, Ti1, B1, C1,
                                                    gW1, gout, gW1, n, DGD, HAS_X, False, BT, DOT_PREC, STAGE)
    if HAS_X:
        gy2 = dx1 * sx1
    else:
        gy2 = gout  # unread
    dW2, de2, dK2, dQ2, deta2, dla2 = _gated_step_vjp(K, e2, W2, Q, eta, p2, g, gp, gl, GD2, AA2, P2, Ti2, B2, C2,
                                                      gW2, gy2, gW2, n, DGD, HAS_X, False, BT, DOT_PREC, STAGE)
    g_k, g_t, ga1, ga2 = _inner_grads_vjp(A1, A2, K, z, u1, slope, r, ra, den, du1, de1, de2, ACT, DGD, DAMPING,
                                          DOT_PREC, STAGE)
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
    if MOMENTUM:  # W's share of the velocity (gV: the end velocity's cotangent)
        dW1 -= gV1
        dW2 -= gV2
    return dW1, dW2, g_k + dK2, g_v, dQ2, deta + deta2, dla + dla2, ga1, ga2


@triton.jit
def _open_vjp(dW1, dW2, gA1, gA2, gV1, gV2, V1s, V2s, beta_ptr, dbeta_ptr, opened, D, HID,
              MOMENTUM: tl.constexpr, BD: tl.constexpr, BH: tl.constexpr):
    """The VJP of a chunk's opening (``chunks_fwd._open``; ``start_chunk_vjp``) given the cotangents of the opened
    weights ``dW1, dW2``, of the anchors ``gA1, gA2`` (this chunk's and, for the last one, the output's) and of the
    end velocity ``gV1, gV2``; ``V1s, V2s``: the start velocities. Opened: ``W = A = W_s + beta V_s``,
    ``V = beta V_s``; else ``W = W_s``, ``V = V_s`` and the anchors are inputs whose cotangents are carried on.
    Stores ``d beta`` (with momentum) and returns the cotangents of the chunk's start state ``(W1, W2, V1, V2)``
    and of its input anchors ``(A1, A2)`` (zeros when it opened)."""
    m1 = _mat_offsets(D, HID, BD, BH)[1]  # the entries of W1 and W2 (not the blocks' padding)
    m2 = _mat_offsets(HID, D, BH, BD)[1]
    gO1 = dW1 + tl.where(opened, gA1, 0.0)
    gO2 = dW2 + tl.where(opened, gA2, 0.0)
    gA1 = tl.where(opened, 0.0, gA1)
    gA2 = tl.where(opened, 0.0, gA2)
    if MOMENTUM:
        gv1 = gO1 + gV1  # the opened velocity: its own term in V_end and its share of W
        gv2 = gO2 + gV2
        db = tl.sum(tl.sum(gv1 * V1s, 1), 0) + tl.sum(tl.sum(gv2 * V2s, 1), 0)
        tl.store(dbeta_ptr, tl.where(opened, db, 0.0).to(dbeta_ptr.dtype.element_ty))
        b = tl.load(beta_ptr).to(tl.float32)
        gV1 = tl.where(m1 & opened, b * gv1, tl.where(m1, gV1, 0.0))
        gV2 = tl.where(m2 & opened, b * gv2, tl.where(m2, gV2, 0.0))
    return tl.where(m1, gO1, 0.0), tl.where(m2, gO2, 0.0), gV1, gV2, gA1, gA2  # padding entries stay zero


@triton.jit
def _store_rows(ptr, val, C, D, BT: tl.constexpr, BD: tl.constexpr):
    """Store the ``(C, D)`` token rows of a ``(BT, BD)`` tile."""
    t = tl.arange(0, BT)
    dd = tl.arange(0, BD)
    mask = (t[:, None] < C) & (dd[None, :] < D)
    tl.store(ptr + t[:, None] * D + dd[None, :], val.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _store_gates(deta_ptr, dla_ptr, deta, dla, C, BT: tl.constexpr):
    t = tl.arange(0, BT)
    tl.store(deta_ptr + t, deta.to(deta_ptr.dtype.element_ty), mask=t < C)
    tl.store(dla_ptr + t, dla.to(dla_ptr.dtype.element_ty), mask=t < C)


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
    # the state's cotangents at the end of chunk j; the anchors': the last chunk's are an output
    gW1, gW2, gV1, gV2, gA1, gA2 = _load_state(gw1_ptr + i * S, gw2_ptr + i * S, gv1_ptr + i * S, gv2_ptr + i * S,
                                               ga1_ptr + i * S, ga2_ptr + i * S, D, HID, True, MOMENTUM, BD, BH)
    if CONT:
        A1in = _load_mat(a1_ptr + i * S, D, HID, BD, BH)
        A2in = _load_mat(a2_ptr + i * S, HID, D, BH, BD)
    for jj in range(NC):
        j = NC - 1 - jj
        c = i * NC + j
        # recompute chunk j's opening from its start state, then the chunk and its VJP
        W1s, W2s, V1s, V2s, _, _ = _load_state(w1s_ptr + c * S, w2s_ptr + c * S, v1s_ptr + c * S, v2s_ptr + c * S,
                                               w1s_ptr, w2s_ptr, D, HID, False, MOMENTUM, BD, BH)
        if not CONT:
            A1in = W1s
            A2in = W2s
        opened = (j > 0) | (not CONT)
        W1, W2, V1, V2, A1, A2 = _open(W1s, W2s, V1s, V2s, A1in, A2in, beta_ptr + c, opened, MOMENTUM)
        tok = c * C * D
        gout = _load_tokens(gout_ptr + tok, C, D, BT, BD, 0)
        dW1, dW2, dK, dV, dQ, deta, dla, ga1, ga2 = _learn_vjp(
            W1, W2, A1, A2, _load_tokens(k_ptr + tok, C, D, BT, BD, 0), _load_tokens(v_ptr + tok, C, D, BT, BD, 0),
            _load_tokens(q_ptr + tok, C, D, BT, BD, 0), gout, gW1, gW2, gV1, gV2, eta_ptr + c * C, la_ptr + c * C,
            C, ACT, DGD, DAMPING, SELF_TARGET, UNIT, MOMENTUM, True, BT, DOT_PREC, STAGE)
        _store_rows(dk_ptr + tok, dK, C, D, BT, BD)
        _store_rows(dv_ptr + tok, dV, C, D, BT, BD)
        _store_rows(dq_ptr + tok, gout + dQ, C, D, BT, BD)
        _store_gates(deta_ptr + c * C, dla_ptr + c * C, deta, dla, C, BT)
        gW1, gW2, gV1, gV2, gA1, gA2 = _open_vjp(dW1, dW2, gA1 + ga1, gA2 + ga2, gV1, gV2, V1s, V2s, beta_ptr + c,
                                                 dbeta_ptr + c, opened, D, HID, MOMENTUM, BD, BH)
    _store_state(dw1_ptr + i * S, dw2_ptr + i * S, dv1_ptr + i * S, dv2_ptr + i * S, gW1, gW2, gV1, gV2, D, HID,
                 MOMENTUM, BD, BH)
    if CONT:
        _store_mat(da1_ptr + i * S, gA1, D, HID, BD, BH)
        _store_mat(da2_ptr + i * S, gA2, HID, D, BH, BD)


@triton.jit
def kv_chunks_bwd_kernel(
    x_ptr, eta_ptr, la_ptr, beta_ptr,  # forward inputs: (2P, NC, C, D) k~ then v~, (2P, NC, C), (2P, NC)
    w1s_ptr, w2s_ptr, v1s_ptr, v2s_ptr,  # (2P, NC, ...) chunk-start states written by the forward
    a1_ptr, a2_ptr,  # (2P, ...) the anchors of the continued chunk (CONT)
    gk_ptr, gv_ptr,  # (P, NC, C, D) cotangents of the keys and values
    gw1_ptr, gw2_ptr, gv1_ptr, gv2_ptr, ga1_ptr, ga2_ptr,  # (2P, ...) cotangents of the end state and anchors
    dx_ptr, deta_ptr, dla_ptr, dbeta_ptr,  # cotangents of the inputs (shapes as the inputs)
    dw1_ptr, dw2_ptr, dv1_ptr, dv2_ptr, da1_ptr, da2_ptr,  # (2P, ...) cotangents of the incoming state, anchors
    P, NC, C, D, HID,
    ACT: tl.constexpr, DGD: tl.constexpr, DAMPING: tl.constexpr, UNIT: tl.constexpr, MOMENTUM: tl.constexpr,
    CONT: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, BH: tl.constexpr, DOT_PREC: tl.constexpr,
    STAGE: tl.constexpr,
):
    """The key/value memories (``smt_kv``), the backward of ``chunks_fwd.kv_chunks_fwd_kernel``: grid ``(P,)``,
    program ``p`` walks the chunks of the key memory ``p`` and the value memory ``P + p`` in reverse. Per chunk both
    memories learned the keys ``L2norm(M_k(k~))`` and values ``M_v(v~)`` read at their anchors, so the cotangents of
    the keys and values collect the output's and both memories' before the reads' VJPs."""
    ik = tl.program_id(0).to(tl.int64)
    iv = ik + P
    S = D * HID
    gW1k, gW2k, gV1k, gV2k, gA1k, gA2k = _load_state(gw1_ptr + ik * S, gw2_ptr + ik * S, gv1_ptr + ik * S,
                                                     gv2_ptr + ik * S, ga1_ptr + ik * S, ga2_ptr + ik * S, D, HID,
                                                     True, MOMENTUM, BD, BH)
    gW1v, gW2v, gV1v, gV2v, gA1v, gA2v = _load_state(gw1_ptr + iv * S, gw2_ptr + iv * S, gv1_ptr + iv * S,
                                                     gv2_ptr + iv * S, ga1_ptr + iv * S, ga2_ptr + iv * S, D, HID,
                                                     True, MOMENTUM, BD, BH)
    if CONT:
        A1ink = _load_mat(a1_ptr + ik * S, D, HID, BD, BH)
        A2ink = _load_mat(a2_ptr + ik * S, HID, D, BH, BD)
        A1inv = _load_mat(a1_ptr + iv * S, D, HID, BD, BH)
        A2inv = _load_mat(a2_ptr + iv * S, HID, D, BH, BD)
    for jj in range(NC):
        j = NC - 1 - jj
        ck = ik * NC + j
        cv = iv * NC + j
        opened = (j > 0) | (not CONT)
        # recompute chunk j's openings and reads from the start states
        W1sk, W2sk, V1sk, V2sk, _, _ = _load_state(w1s_ptr + ck * S, w2s_ptr + ck * S, v1s_ptr + ck * S,
                                                   v2s_ptr + ck * S, w1s_ptr, w2s_ptr, D, HID, False, MOMENTUM, BD, BH)
        W1sv, W2sv, V1sv, V2sv, _, _ = _load_state(w1s_ptr + cv * S, w2s_ptr + cv * S, v1s_ptr + cv * S,
                                                   v2s_ptr + cv * S, w1s_ptr, w2s_ptr, D, HID, False, MOMENTUM, BD, BH)
        if not CONT:
            A1ink = W1sk
            A2ink = W2sk
            A1inv = W1sv
            A2inv = W2sv
        W1k, W2k, V1k, V2k, A1k, A2k = _open(W1sk, W2sk, V1sk, V2sk, A1ink, A2ink, beta_ptr + ck, opened, MOMENTUM)
        W1v, W2v, V1v, V2v, A1v, A2v = _open(W1sv, W2sv, V1sv, V2sv, A1inv, A2inv, beta_ptr + cv, opened, MOMENTUM)
        Xk = _load_tokens(x_ptr + ck * C * D, C, D, BT, BD, 0)
        Xv = _load_tokens(x_ptr + cv * C * D, C, D, BT, BD, 0)
        Kraw = _mlp(A1k, A2k, Xk, ACT, DOT_PREC, STAGE)
        K = _l2norm(Kraw)
        V = _mlp(A1v, A2v, Xv, ACT, DOT_PREC, STAGE)
        # both memories' chunk VJPs, then the reads' (the keys and values feed both)
        o = ck * C * D
        gK = _load_tokens(gk_ptr + o, C, D, BT, BD, 0)
        gV = _load_tokens(gv_ptr + o, C, D, BT, BD, 0)
        dW1k, dW2k, dKk, dVk, _, deta, dla, ga1k, ga2k = _learn_vjp(
            W1k, W2k, A1k, A2k, K, V, K, gK, gW1k, gW2k, gV1k, gV2k, eta_ptr + ck * C, la_ptr + ck * C, C,
            ACT, DGD, DAMPING, True, UNIT, MOMENTUM, False, BT, DOT_PREC, STAGE)
        _store_gates(deta_ptr + ck * C, dla_ptr + ck * C, deta, dla, C, BT)
        dW1v, dW2v, dKv, dVv, _, deta, dla, ga1v, ga2v = _learn_vjp(
            W1v, W2v, A1v, A2v, K, V, K, gK, gW1v, gW2v, gV1v, gV2v, eta_ptr + cv * C, la_ptr + cv * C, C,
            ACT, DGD, DAMPING, True, UNIT, MOMENTUM, False, BT, DOT_PREC, STAGE)
        _store_gates(deta_ptr + cv * C, dla_ptr + cv * C, deta, dla, C, BT)
        dXk, ra1k, ra2k = _mlp_vjp(A1k, A2k, Xk, _l2norm_vjp(Kraw, gK + dKk + dKv), ACT, DOT_PREC, STAGE)
        dXv, ra1v, ra2v = _mlp_vjp(A1v, A2v, Xv, gV + dVk + dVv, ACT, DOT_PREC, STAGE)
        _store_rows(dx_ptr + ck * C * D, dXk, C, D, BT, BD)
        _store_rows(dx_ptr + cv * C * D, dXv, C, D, BT, BD)
        gW1k, gW2k, gV1k, gV2k, gA1k, gA2k = _open_vjp(dW1k, dW2k, gA1k + ga1k + ra1k, gA2k + ga2k + ra2k, gV1k,
                                                       gV2k, V1sk, V2sk, beta_ptr + ck, dbeta_ptr + ck, opened, D,
                                                       HID, MOMENTUM, BD, BH)
        gW1v, gW2v, gV1v, gV2v, gA1v, gA2v = _open_vjp(dW1v, dW2v, gA1v + ga1v + ra1v, gA2v + ga2v + ra2v, gV1v,
                                                       gV2v, V1sv, V2sv, beta_ptr + cv, dbeta_ptr + cv, opened, D,
                                                       HID, MOMENTUM, BD, BH)
    _store_state(dw1_ptr + ik * S, dw2_ptr + ik * S, dv1_ptr + ik * S, dv2_ptr + ik * S, gW1k, gW2k, gV1k, gV2k, D,
                 HID, MOMENTUM, BD, BH)
    _store_state(dw1_ptr + iv * S, dw2_ptr + iv * S, dv1_ptr + iv * S, dv2_ptr + iv * S, gW1v, gW2v, gV1v, gV2v, D,
                 HID, MOMENTUM, BD, BH)
    if CONT:
        _store_mat(da1_ptr + ik * S, gA1k, D, HID, BD, BH)
        _store_mat(da2_ptr + ik * S, gA2k, HID, D, BH, BD)
        _store_mat(da1_ptr + iv * S, gA1v, D, HID, BD, BH)
        _store_mat(da2_ptr + iv * S, gA2v, HID, D, BH, BD)
