"""One-launch Triton forward of the whole DGD chunk loop (``hope.ops.dgd.chunk_loop._chunk_forward`` for every
chunk): the weights ``W1 (d, h)``, ``W2 (h, d)`` and the velocities stay in registers from chunk to chunk.

Per chunk (paper Eq. 91, docs/semantics.md): open the chunk (momentum ``V <- beta V; W <- W + V``, the anchors
are the new weights; a call continuing an open chunk takes its first chunk's anchors from the input), compute
the targets (``L2norm(M_0(v))``, the raw ``M_0(v)`` or the given ``v``), the layer inputs and error terms at the
anchor (``inner_grads``), then run the gated DGD recurrence of ``W2`` and of ``W1`` in the UT/WY form of
``hope/kernels/README.md`` (``_gated_step``, the math of ``fwd.py``'s ``_chunk_prologue`` with the whole matrix in
one program), the read-out ``q + W1_t s(W2_t q_t)`` and the velocity ``V += W_end - W_start``.

``dgd_chunks_fwd_kernel`` (main memory): one program per memory. ``kv_chunks_fwd_kernel`` (the key/value memories
of ``smt_kv``): one program per ``(b, h)`` pair holding both memories, because each chunk of either memory learns
the keys read from the key memory and the values read from the value memory at their anchors; splitting the
pair over two programs would need both to meet after every chunk, which one launch cannot do.

Both write every chunk's START state (``w1, w2, v1, v2`` before the chunk opens), from which the backward
recomputes each chunk. All arithmetic is fp32 (loads are up-cast); ``DOT_PREC`` as in ``fwd.py``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from hope.kernels.dgd.fwd import _chunk_gates, _gated_solve, _load_tokens, _staged

SILU, GELU, GELU_TANH = 0, 1, 2  # the ``ACT`` codes, as :data:`hope.ops.common.ACTIVATIONS`


@triton.jit
def _act(z, ACT: tl.constexpr):
    """``s(z)`` and ``s'(z)`` (``hope.ops.common.activation`` and ``activation_grad``, the same formulas)."""
    if ACT == 0:  # silu
        sig = tl.sigmoid(z)
        s = z * sig
        ds = sig * (1.0 + z * (1.0 - sig))
    elif ACT == 1:  # exact (erf) gelu
        cdf = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
        s = z * cdf
        ds = cdf + z * tl.exp(-0.5 * z * z) * 0.3989422804014327
    else:  # tanh gelu; tanh(y) = 2 sigmoid(2y) - 1
        c = 0.7978845608028654 * (z + 0.044715 * z * z * z)
        th = 2.0 * tl.sigmoid(2.0 * c) - 1.0
        s = 0.5 * z * (1.0 + th)
        ds = 0.5 * (1.0 + th) + 0.5 * z * (1.0 - th * th) * 0.7978845608028654 * (1.0 + 0.134145 * z * z)
    return s, ds


@triton.jit
def _act2(z, ACT: tl.constexpr):
    """``s''(z)`` (``hope.ops.common.activation_grad2``, the same formulas; the outer backward of the slope)."""
    if ACT == 0:  # silu
        sig = tl.sigmoid(z)
        d2 = sig * (1.0 - sig) * (2.0 + z * (1.0 - 2.0 * sig))
    elif ACT == 1:  # exact (erf) gelu
        d2 = tl.exp(-0.5 * z * z) * 0.3989422804014327 * (2.0 - z * z)
    else:  # tanh gelu: s = 0.5 z (1 + th), th = tanh(c (z + a z^3))
        c = 0.7978845608028654 * (z + 0.044715 * z * z * z)
        th = 2.0 * tl.sigmoid(2.0 * c) - 1.0
        dc = 0.7978845608028654 * (1.0 + 0.134145 * z * z)
        dth = (1.0 - th * th) * dc
        d2th = -2.0 * th * dth * dc + (1.0 - th * th) * 0.7978845608028654 * 0.26829 * z
        d2 = dth + 0.5 * z * d2th
    return d2


@triton.jit
def _mat_offsets(R, Cc, BR: tl.constexpr, BC: tl.constexpr):
    """Offsets and mask of a row-major ``(R, Cc)`` matrix in a ``(BR, BC)`` block."""
    r = tl.arange(0, BR)
    c = tl.arange(0, BC)
    return r[:, None] * Cc + c[None, :], (r[:, None] < R) & (c[None, :] < Cc)


@triton.jit
def _load_mat(ptr, R, Cc, BR: tl.constexpr, BC: tl.constexpr):
    offs, mask = _mat_offsets(R, Cc, BR, BC)
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store_mat(ptr, val, R, Cc, BR: tl.constexpr, BC: tl.constexpr):
    offs, mask = _mat_offsets(R, Cc, BR, BC)
    tl.store(ptr + offs, val.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _l2norm(x):
    """``hope.ops.common.l2norm`` of the rows of ``x``."""
    return x * tl.rsqrt(tl.sum(x * x, 1) + 1e-6)[:, None]


@triton.jit
def _mlp(A1, A2, X, ACT: tl.constexpr, DOT_PREC: tl.constexpr, STAGE: tl.constexpr):
    """``M(x) = x + A1 s(A2 x)`` (paper Eq. 89) for the rows of ``X``."""
    s, _ = _act(tl.dot(X, tl.trans(_staged(A2, STAGE)), input_precision=DOT_PREC), ACT)
    return X + tl.dot(s, tl.trans(_staged(A1, STAGE)), input_precision=DOT_PREC)


@triton.jit
def _inner_grads(A1, A2, K, target, ACT: tl.constexpr, DGD: tl.constexpr, DAMPING: tl.constexpr,
                 DOT_PREC: tl.constexpr, STAGE: tl.constexpr):
    """``(u1, e1, e2)`` of ``hope.ops.dgd.common.inner_grads`` (``u2`` is ``K``): the hidden activations and the
    error terms of ``W1`` and ``W2`` for the inner loss ``0.5 |M(k) - target|^2`` at the anchor; then the
    intermediates its VJP (``chunks_bwd._inner_grads_vjp``) reads: ``z = K A2^T``, ``s'(z)``, the residual ``r``,
    ``r A1`` and the damping denominator (ones without damping)."""
    z = tl.dot(K, tl.trans(_staged(A2, STAGE)), input_precision=DOT_PREC)
    h, slope = _act(z, ACT)
    r = K + tl.dot(h, tl.trans(_staged(A1, STAGE)), input_precision=DOT_PREC) - target
    ra = tl.dot(r, _staged(A1, STAGE), input_precision=DOT_PREC)
    delta2 = ra * slope
    den = tl.full((z.shape[0],), 1.0, tl.float32)
    if not DGD:
        e1 = r
        e2 = delta2
    elif not DAMPING:
        e1 = K - target
        e2 = delta2 - z
    else:  # Levenberg-Marquardt damping 1 / (1 + |A1 diag(s'(z_t))|_F^2) of the hidden layer's step
        sq = tl.sum(A1 * A1, 0)
        den = 1.0 + tl.sum(slope * slope * sq[None, :], 1)
        e1 = K - target
        e2 = delta2 / den[:, None] - z
    return h, e1, e2, z, slope, r, ra, den


@triton.jit
def _gated_read(W, U, X, C, g, BT: tl.constexpr, DOT_PREC: tl.constexpr, STAGE: tl.constexpr):
    """The reads ``Y_t = W_t x_t`` of one chunk: ``exp(g) o (X W^T) + (Q o X U^T) C``, ``Q_ts = exp(g_t - g_s)``
    for ``s <= t``."""
    t = tl.arange(0, BT)
    Q = tl.exp(tl.where(t[:, None] >= t[None, :], g[:, None] - g[None, :], float("-inf")))
    Y = tl.exp(g)[:, None] * tl.dot(X, tl.trans(_staged(W, STAGE)), input_precision=DOT_PREC)
    return Y + tl.dot(Q * tl.dot(X, tl.trans(U), input_precision=DOT_PREC), C, input_precision=DOT_PREC)


@triton.jit
def _gated_end(W, U, C, g, gl, DOT_PREC: tl.constexpr):
    """The chunk's end state ``W_end = exp(gl) W + (exp(gl - g) o C)^T U``."""
    return tl.exp(gl) * W + tl.dot(tl.trans(C * tl.exp(gl - g)[:, None]), U, input_precision=DOT_PREC)


@triton.jit
def _gated_step(W, U, E, X, eta, g, gp, gl, n, DGD: tl.constexpr, HAS_X: tl.constexpr, BT: tl.constexpr,
                DOT_PREC: tl.constexpr, STAGE: tl.constexpr):
    """One chunk of ``W_t = alpha_t W_{t-1} + c_t u_t^T`` with ``c_t = -eta'_t (W_{t-1} u_t + e_t)`` (DGD,
    ``eta' = eta / (1 + eta |u|^2)``) or ``c_t = -eta_t e_t``: returns ``W_end`` and the reads ``W_t x_t``
    (zeros without ``HAS_X``). ``g``, ``gp``, ``gl``: inclusive, exclusive and total log-decay cumsums."""
    _, _, _, _, _, _, C = _gated_solve(W, U, E, eta, g, gp, n, DGD, BT, DOT_PREC, STAGE)
    W_end = _gated_end(W, U, C, g, gl, DOT_PREC)
    if HAS_X:
        Y = _gated_read(W, U, X, C, g, BT, DOT_PREC, STAGE)
    else:
        Y = tl.zeros_like(E)
    return W_end, Y


@triton.jit
def _open(W1, W2, V1, V2, A1, A2, beta_ptr, opened, MOMENTUM: tl.constexpr):
    """Open a chunk (``hope.ops.dgd.common.open_chunk``) when ``opened``, else keep the state and anchors (the
    first chunk of a call that continues an open one). Returns ``(W1, W2, V1, V2, A1, A2)``."""
    if MOMENTUM:
        b = tl.where(opened, tl.load(beta_ptr).to(tl.float32), 1.0)
        V1 = b * V1
        V2 = b * V2
        W1 = W1 + tl.where(opened, V1, 0.0)
        W2 = W2 + tl.where(opened, V2, 0.0)
    return W1, W2, V1, V2, tl.where(opened, W1, A1), tl.where(opened, W2, A2)


@triton.jit
def _target(A1, A2, Vt, ACT: tl.constexpr, SELF_TARGET: tl.constexpr, UNIT: tl.constexpr, DOT_PREC: tl.constexpr,
            STAGE: tl.constexpr):
    """The regression target of the chunk and the memory read it normalises: ``(L2norm(M_0(v)), M_0(v))``
    (paper Eq. 87/90), ``(M_0(v), M_0(v))`` without ``UNIT`` or ``(v, v)`` without ``SELF_TARGET``."""
    if SELF_TARGET:
        m = _mlp(A1, A2, Vt, ACT, DOT_PREC, STAGE)
        if UNIT:
            target = _l2norm(m)
        else:
            target = m
    else:
        m = Vt
        target = Vt
    return target, m


@triton.jit
def _learn(W1, W2, V1, V2, A1, A2, K, Vt, X, eta_ptr, la_ptr, n,
           ACT: tl.constexpr, DGD: tl.constexpr, DAMPING: tl.constexpr, SELF_TARGET: tl.constexpr,
           UNIT: tl.constexpr, MOMENTUM: tl.constexpr, HAS_X: tl.constexpr, BT: tl.constexpr,
           DOT_PREC: tl.constexpr, STAGE: tl.constexpr):
    """One opened chunk of one memory learning ``K -> target(Vt)`` at the anchors ``(A1, A2)``: the end state
    ``(W1, W2, V1, V2)`` and, with ``HAS_X``, the read-out ``W1_t s(W2_t x_t)``."""
    eta, _, g, gp, gl = _chunk_gates(eta_ptr, la_ptr, n, BT)
    target, _ = _target(A1, A2, Vt, ACT, SELF_TARGET, UNIT, DOT_PREC, STAGE)
    u1, e1, e2, _, _, _, _, _ = _inner_grads(A1, A2, K, target, ACT, DGD, DAMPING, DOT_PREC, STAGE)
    W2e, y2 = _gated_step(W2, K, e2, X, eta, g, gp, gl, n, DGD, HAS_X, BT, DOT_PREC, STAGE)
    x1, _ = _act(y2, ACT)
    W1e, y1 = _gated_step(W1, u1, e1, x1, eta, g, gp, gl, n, DGD, HAS_X, BT, DOT_PREC, STAGE)
    if MOMENTUM:  # the velocity collects the change of the weights over the chunk
        V1 = V1 + (W1e - W1)
        V2 = V2 + (W2e - W2)
    return W1e, W2e, V1, V2, y1


@triton.jit
def _load_state(w1_ptr, w2_ptr, v1_ptr, v2_ptr, a1_ptr, a2_ptr, D, HID, CONT: tl.constexpr,
                MOMENTUM: tl.constexpr, BD: tl.constexpr, BH: tl.constexpr):
    """``(W1, W2, V1, V2, A1, A2)`` of one memory (zero velocities without momentum, anchors = weights unless
    the call continues an open chunk)."""
    W1 = _load_mat(w1_ptr, D, HID, BD, BH)
    W2 = _load_mat(w2_ptr, HID, D, BH, BD)
    if MOMENTUM:
        V1 = _load_mat(v1_ptr, D, HID, BD, BH)
        V2 = _load_mat(v2_ptr, HID, D, BH, BD)
    else:
        V1 = tl.zeros_like(W1)
        V2 = tl.zeros_like(W2)
    if CONT:
        A1 = _load_mat(a1_ptr, D, HID, BD, BH)
        A2 = _load_mat(a2_ptr, HID, D, BH, BD)
    else:
        A1 = W1
        A2 = W2
    return W1, W2, V1, V2, A1, A2


@triton.jit
def _store_state(w1_ptr, w2_ptr, v1_ptr, v2_ptr, W1, W2, V1, V2, D, HID, MOMENTUM: tl.constexpr,
                 BD: tl.constexpr, BH: tl.constexpr):
    _store_mat(w1_ptr, W1, D, HID, BD, BH)
    _store_mat(w2_ptr, W2, HID, D, BH, BD)
    if MOMENTUM:
        _store_mat(v1_ptr, V1, D, HID, BD, BH)
        _store_mat(v2_ptr, V2, HID, D, BH, BD)


@triton.jit
def dgd_chunks_fwd_kernel(
    k_ptr, v_ptr, q_ptr, eta_ptr, la_ptr, beta_ptr,  # (N, NC, C, D) tokens, (N, NC, C) gates, (N, NC) beta
    w1_ptr, w2_ptr, v1_ptr, v2_ptr, a1_ptr, a2_ptr,  # (N, ...) state
    out_ptr, w1e_ptr, w2e_ptr, v1e_ptr, v2e_ptr, a1e_ptr, a2e_ptr,  # read-out (N, NC, C, D), end state
    w1s_ptr, w2s_ptr, v1s_ptr, v2s_ptr,  # (N, NC, ...) chunk-start states
    NC, C, D, HID,
    ACT: tl.constexpr, DGD: tl.constexpr, DAMPING: tl.constexpr, SELF_TARGET: tl.constexpr, UNIT: tl.constexpr,
    MOMENTUM: tl.constexpr, CONT: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, BH: tl.constexpr,
    DOT_PREC: tl.constexpr, STAGE: tl.constexpr,
):
    """The main memory: grid ``(N,)``, all ``NC`` chunks of memory ``i`` (``dgd_memory``)."""
    i = tl.program_id(0).to(tl.int64)
    S = D * HID
    W1, W2, V1, V2, A1, A2 = _load_state(w1_ptr + i * S, w2_ptr + i * S, v1_ptr + i * S, v2_ptr + i * S,
                                         a1_ptr + i * S, a2_ptr + i * S, D, HID, CONT, MOMENTUM, BD, BH)
    t = tl.arange(0, BT)
    dd = tl.arange(0, BD)
    for j in range(NC):
        c = i * NC + j  # this memory's chunk j
        _store_state(w1s_ptr + c * S, w2s_ptr + c * S, v1s_ptr + c * S, v2s_ptr + c * S, W1, W2, V1, V2, D, HID,
                     MOMENTUM, BD, BH)
        W1, W2, V1, V2, A1, A2 = _open(W1, W2, V1, V2, A1, A2, beta_ptr + c, (j > 0) | (not CONT), MOMENTUM)
        K = _load_tokens(k_ptr + c * C * D, C, D, BT, BD, 0)
        Vt = _load_tokens(v_ptr + c * C * D, C, D, BT, BD, 0)
        Q = _load_tokens(q_ptr + c * C * D, C, D, BT, BD, 0)
        W1, W2, V1, V2, y1 = _learn(W1, W2, V1, V2, A1, A2, K, Vt, Q, eta_ptr + c * C, la_ptr + c * C, C,
                                    ACT, DGD, DAMPING, SELF_TARGET, UNIT, MOMENTUM, True, BT, DOT_PREC, STAGE)
        omask = (t[:, None] < C) & (dd[None, :] < D)
        tl.store(out_ptr + c * C * D + t[:, None] * D + dd[None, :], (Q + y1).to(out_ptr.dtype.element_ty),
                 mask=omask)
    _store_state(w1e_ptr + i * S, w2e_ptr + i * S, v1e_ptr + i * S, v2e_ptr + i * S, W1, W2, V1, V2, D, HID,
                 MOMENTUM, BD, BH)
    _store_mat(a1e_ptr + i * S, A1, D, HID, BD, BH)
    _store_mat(a2e_ptr + i * S, A2, HID, D, BH, BD)


@triton.jit
def kv_chunks_fwd_kernel(
    x_ptr, eta_ptr, la_ptr, beta_ptr,  # (2P, NC, C, D) inputs (k~ of the key memories, then v~), gates
    w1_ptr, w2_ptr, v1_ptr, v2_ptr, a1_ptr, a2_ptr,  # (2P, ...) state: the key memories, then the value ones
    k_ptr, v_ptr, w1e_ptr, w2e_ptr, v1e_ptr, v2e_ptr, a1e_ptr, a2e_ptr,  # keys, values (P, NC, C, D), end state
    w1s_ptr, w2s_ptr, v1s_ptr, v2s_ptr,  # (2P, NC, ...) chunk-start states
    P, NC, C, D, HID,
    ACT: tl.constexpr, DGD: tl.constexpr, DAMPING: tl.constexpr, UNIT: tl.constexpr, MOMENTUM: tl.constexpr,
    CONT: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, BH: tl.constexpr, DOT_PREC: tl.constexpr,
    STAGE: tl.constexpr,
):
    """The key/value memories (``smt_kv``): grid ``(P,)``, program ``p`` runs the key memory ``p`` and the value
    memory ``P + p`` of one ``(b, h)``: per chunk the keys ``L2norm(M_k(k~))`` and values ``M_v(v~)`` read at
    the anchors, then both memories learn ``keys -> L2norm(M(values))`` (or the raw ``M(values)``)."""
    ik = tl.program_id(0).to(tl.int64)
    iv = ik + P
    S = D * HID
    W1k, W2k, V1k, V2k, A1k, A2k = _load_state(w1_ptr + ik * S, w2_ptr + ik * S, v1_ptr + ik * S,
                                               v2_ptr + ik * S, a1_ptr + ik * S, a2_ptr + ik * S, D, HID, CONT,
                                               MOMENTUM, BD, BH)
    W1v, W2v, V1v, V2v, A1v, A2v = _load_state(w1_ptr + iv * S, w2_ptr + iv * S, v1_ptr + iv * S,
                                               v2_ptr + iv * S, a1_ptr + iv * S, a2_ptr + iv * S, D, HID, CONT,
                                               MOMENTUM, BD, BH)
    t = tl.arange(0, BT)
    dd = tl.arange(0, BD)
    omask = (t[:, None] < C) & (dd[None, :] < D)
    for j in range(NC):
        ck = ik * NC + j
        cv = iv * NC + j
        opened = (j > 0) | (not CONT)
        _store_state(w1s_ptr + ck * S, w2s_ptr + ck * S, v1s_ptr + ck * S, v2s_ptr + ck * S, W1k, W2k, V1k, V2k,
                     D, HID, MOMENTUM, BD, BH)
        _store_state(w1s_ptr + cv * S, w2s_ptr + cv * S, v1s_ptr + cv * S, v2s_ptr + cv * S, W1v, W2v, V1v, V2v,
                     D, HID, MOMENTUM, BD, BH)
        W1k, W2k, V1k, V2k, A1k, A2k = _open(W1k, W2k, V1k, V2k, A1k, A2k, beta_ptr + ck, opened, MOMENTUM)
        W1v, W2v, V1v, V2v, A1v, A2v = _open(W1v, W2v, V1v, V2v, A1v, A2v, beta_ptr + cv, opened, MOMENTUM)
        K = _l2norm(_mlp(A1k, A2k, _load_tokens(x_ptr + ck * C * D, C, D, BT, BD, 0), ACT, DOT_PREC, STAGE))
        V = _mlp(A1v, A2v, _load_tokens(x_ptr + cv * C * D, C, D, BT, BD, 0), ACT, DOT_PREC, STAGE)
        o = (ik * NC + j) * C * D + t[:, None] * D + dd[None, :]
        tl.store(k_ptr + o, K.to(k_ptr.dtype.element_ty), mask=omask)
        tl.store(v_ptr + o, V.to(v_ptr.dtype.element_ty), mask=omask)
        W1k, W2k, V1k, V2k, _ = _learn(W1k, W2k, V1k, V2k, A1k, A2k, K, V, K, eta_ptr + ck * C, la_ptr + ck * C, C,
                                       ACT, DGD, DAMPING, True, UNIT, MOMENTUM, False, BT, DOT_PREC, STAGE)
        W1v, W2v, V1v, V2v, _ = _learn(W1v, W2v, V1v, V2v, A1v, A2v, K, V, K, eta_ptr + cv * C, la_ptr + cv * C, C,
                                       ACT, DGD, DAMPING, True, UNIT, MOMENTUM, False, BT, DOT_PREC, STAGE)
    _store_state(w1e_ptr + ik * S, w2e_ptr + ik * S, v1e_ptr + ik * S, v2e_ptr + ik * S, W1k, W2k, V1k, V2k, D,
                 HID, MOMENTUM, BD, BH)
    _store_state(w1e_ptr + iv * S, w2e_ptr + iv * S, v1e_ptr + iv * S, v2e_ptr + iv * S, W1v, W2v, V1v, V2v, D,
                 HID, MOMENTUM, BD, BH)
    _store_mat(a1e_ptr + ik * S, A1k, D, HID, BD, BH)
    _store_mat(a2e_ptr + ik * S, A2k, HID, D, BH, BD)
    _store_mat(a1e_ptr + iv * S, A1v, D, HID, BD, BH)
    _store_mat(a2e_ptr + iv * S, A2v, HID, D, BH, BD)
