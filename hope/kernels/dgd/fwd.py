"""Forward Triton kernel of one chunk of the DGD recurrence of a linear map (``linear_chunk``).

One program handles one memory (a flattened leading index: batch x head, or key/value x batch x head) and
one block of ``BM`` rows of the weight matrix ``W (m, k)``. Every row of ``W`` evolves independently given
the chunk's layer inputs ``U``: only the ``(n, n)`` triangular system is shared, and each row block
recomputes it (it costs ``O(n^2 k + n^3)``, small next to the ``O(n m k)`` of the block's own products).

All arithmetic is fp32 (inputs of any float dtype are up-cast on load); ``DOT_PREC`` is ``"ieee"`` for
fp32 inputs (bit-level CPU/GPU parity with the PyTorch reference) and ``"tf32"`` for half-precision inputs.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _staged(x, STAGE: tl.constexpr):
    """``x``; with ``STAGE`` a fresh copy of it (an identity ``mov`` the compiler neither merges nor moves), taken
    right where a ``tl.dot`` reads it. Triton stages a dot's register operand in shared memory from the operand's
    definition to its last use (one buffer per layout), so the whole ``W`` of a one-launch kernel, defined early and
    read by several dots, would hold its buffers throughout; a fresh copy per dot holds one only around that dot
    (``hope/kernels/README.md``, "On-chip limits"). Compiled code only (the interpreter runs no inline asm)."""
    if STAGE:
        return tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=False, pack=1)
    else:
        return x


@triton.jit
def _row(mat, rows, i):
    """Row ``i`` of a register matrix, as a vector along the column axis."""
    return tl.sum(tl.where(rows[:, None] == i, mat, 0.0), 0)


@triton.jit
def _unit_lower_inverse(L, n, BT: tl.constexpr):
    """``(I + L)^{-1}`` of a strictly lower-triangular ``L (BT, BT)`` by forward substitution over rows.

    Row ``i`` of the inverse is ``e_i - sum_{j<i} L_ij Tinv_j``; rows ``>= n`` are padding and stay ``e_i``.
    """
    rows = tl.arange(0, BT)
    cols = tl.arange(0, BT)
    tinv = tl.where(rows[:, None] == cols[None, :], 1.0, 0.0)
    for i in range(1, n):
        l_i = _row(L, rows, i)  # L[i, :], indexed by j along the column axis
        new = tl.where(cols == i, 1.0, 0.0) - tl.sum(l_i[:, None] * tinv, 0)
        tinv = tl.where(rows[:, None] == i, new[None, :], tinv)
    return tinv


@triton.jit
def _load_tokens(ptr, n, width, BT: tl.constexpr, BW: tl.constexpr, col0):
    """``(BT, BW)`` tile of a row-major ``(n, width)`` matrix starting at column ``col0``, zero padded."""
    t = tl.arange(0, BT)
    c = col0 + tl.arange(0, BW)
    mask = (t[:, None] < n) & (c[None, :] < width)
    return tl.load(ptr + t[:, None] * width + c[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _chunk_gates(eta_ptr, la_ptr, n, BT: tl.constexpr):
    """The chunk's raw steps ``eta`` and log retentions ``la`` (zero padded) and their log-decay cumsums: ``g``
    inclusive, ``gp = g - la`` exclusive, ``gl`` the chunk's total (padding has log alpha = 0, so ``g_pad = gl``)."""
    t = tl.arange(0, BT)
    eta = tl.load(eta_ptr + t, mask=t < n, other=0.0).to(tl.float32)
    la = tl.load(la_ptr + t, mask=t < n, other=0.0).to(tl.float32)
    g = tl.sum(tl.where(t[None, :] <= t[:, None], la[None, :], 0.0), 1)
    gl = tl.sum(tl.where(t == n - 1, g, 0.0), 0)
    return eta, la, g, g - la, gl


@triton.jit
def _gated_solve(W, U, D, eta, g, gp, n, DGD: tl.constexpr, BT: tl.constexpr, DOT_PREC: tl.constexpr,
                 STAGE: tl.constexpr):
    """The steps ``C`` of one chunk of ``W_t = alpha_t W_{t-1} + c_t u_t^T`` (rows of ``W``: any block of the
    matrix) and what the backward reuses: returns ``e, GD, A, P, Tinv, B, C`` (README names): ``e`` the effective
    step ``eta' = eta / (1 + eta |u|^2)`` (``eta`` without DGD), ``GD = -e o D``, ``A = U U^T``, ``P`` the strict
    decay mask, ``Tinv = (I + L)^{-1}`` with ``L = e o P o A``, ``B = U W^T`` and ``C = Tinv R``,
    ``R = GD - (e exp(gp)) o B`` (``C = GD`` without DGD, and ``A, P, Tinv, B`` are zeros). ``STAGE``: see
    :func:`_staged`."""
    t = tl.arange(0, BT)
    if DGD:
        e = eta / (1.0 + eta * tl.sum(U * U, 1))
    else:
        e = eta
    GD = -e[:, None] * D
    if DGD:
        A = tl.dot(U, tl.trans(U), input_precision=DOT_PREC)
        P = tl.exp(tl.where(t[:, None] > t[None, :], gp[:, None] - g[None, :], float("-inf")))
        Tinv = _unit_lower_inverse(e[:, None] * P * A, n, BT)
        B = tl.dot(U, tl.trans(_staged(W, STAGE)), input_precision=DOT_PREC)
        C = tl.dot(Tinv, GD - (e * tl.exp(gp))[:, None] * B, input_precision=DOT_PREC)
    else:
        A = tl.zeros((BT, BT), dtype=tl.float32)
        P = tl.zeros((BT, BT), dtype=tl.float32)
        Tinv = tl.zeros((BT, BT), dtype=tl.float32)
        B = tl.zeros_like(GD)
        C = GD
    return e, GD, A, P, Tinv, B, C


@triton.jit
def _chunk_prologue(u_ptr, d_ptr, w_ptr, eta_ptr, la_ptr, n, M, K, m0,
                    DGD: tl.constexpr, BT: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr,
                    DOT_PREC: tl.constexpr):
    """Everything shared by the forward and the backward (recompute) of one chunk and one row block.

    Returns ``U, D, W, eta, e, g, gp, gl, GD, A, P, Tinv, B, C``: the loaded operands, the gates of
    :func:`_chunk_gates` and the solve of :func:`_gated_solve` (names as in ``hope/kernels/README.md``).
    """
    U = _load_tokens(u_ptr, n, K, BT, BK, 0)
    D = _load_tokens(d_ptr, n, M, BT, BM, m0)
    mm = m0 + tl.arange(0, BM)
    kk = tl.arange(0, BK)
    W = tl.load(w_ptr + mm[:, None] * K + kk[None, :], mask=(mm[:, None] < M) & (kk[None, :] < K),
                other=0.0).to(tl.float32)
    eta, la, g, gp, gl = _chunk_gates(eta_ptr, la_ptr, n, BT)
    e, GD, A, P, Tinv, B, C = _gated_solve(W, U, D, eta, g, gp, n, DGD, BT, DOT_PREC, False)
    return U, D, W, eta, e, g, gp, gl, GD, A, P, Tinv, B, C


@triton.jit
def linear_chunk_fwd_kernel(
    w_ptr, u_ptr, d_ptr, x_ptr, eta_ptr, la_ptr,  # inputs
    wend_ptr, y_ptr, s_ptr,  # outputs
    n, M, K,
    DGD: tl.constexpr, HAS_X: tl.constexpr, BT: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid ``(N, cdiv(M, BM))``. Writes ``W_end``, ``S = GD^T U`` (row block) and ``Y`` (column block)."""
    i_n = tl.program_id(0).to(tl.int64)
    m0 = tl.program_id(1) * BM
    off_w = i_n * M * K
    off_u = i_n * n * K
    off_d = i_n * n * M
    U, D, W, eta, e, g, gp, gl, GD, A, P, Tinv, B, C = _chunk_prologue(
        u_ptr + off_u, d_ptr + off_d, w_ptr + off_w, eta_ptr + i_n * n, la_ptr + i_n * n, n, M, K, m0,
        DGD, BT, BM, BK, DOT_PREC)
    t = tl.arange(0, BT)
    mm = m0 + tl.arange(0, BM)
    kk = tl.arange(0, BK)
    wmask = (mm[:, None] < M) & (kk[None, :] < K)
    w_offs = off_w + mm[:, None] * K + kk[None, :]

    f = tl.exp(gl - g)
    w_end = tl.exp(gl) * W + tl.dot(tl.trans(C * f[:, None]), U, input_precision=DOT_PREC)
    tl.store(wend_ptr + w_offs, w_end.to(wend_ptr.dtype.element_ty), mask=wmask)
    s = tl.dot(tl.trans(GD), U, input_precision=DOT_PREC)
    tl.store(s_ptr + w_offs, s.to(s_ptr.dtype.element_ty), mask=wmask)
    if HAS_X:
        X = _load_tokens(x_ptr + off_u, n, K, BT, BK, 0)
        causal = t[:, None] >= t[None, :]
        Q = tl.exp(tl.where(causal, g[:, None] - g[None, :], float("-inf")))
        XU = tl.dot(X, tl.trans(U), input_precision=DOT_PREC)
        y = tl.exp(g)[:, None] * tl.dot(X, tl.trans(W), input_precision=DOT_PREC)
        y += tl.dot(Q * XU, C, input_precision=DOT_PREC)
        ymask = (t[:, None] < n) & (mm[None, :] < M)
        tl.store(y_ptr + off_d + t[:, None] * M + mm[None, :], y.to(y_ptr.dtype.element_ty), mask=ymask)
