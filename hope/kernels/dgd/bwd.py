"""Backward Triton kernel of one chunk of the DGD recurrence of a linear map (``linear_chunk``).

Nothing of the forward is stored but its inputs (the chunk-start weights, ``U``, ``D``, ``X`` and the
gates): each program recomputes the chunk (``_chunk_prologue``: decays, the triangular inverse, ``C``) and
then back-propagates analytically through it. Like the forward, a program owns one block of ``BM`` rows of
``W``; gradients that sum over rows (``dU``, ``dX``, ``d eta``, ``d log alpha``) are written as per-block
partials and summed by the caller (a no-op when one block covers ``W``). The derivation is in
``hope/kernels/README.md``; :func:`_gated_step_vjp` is that math on register tiles, shared with the one-launch
backward over all chunks (``chunks_bwd.py``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from hope.kernels.dgd.fwd import _chunk_prologue, _load_tokens, _staged


@triton.jit
def _gated_step_vjp(U, D, W, X, eta, e, g, gp, gl, GD, A, P, Tinv, B, C, dwe, dy, ds, n,
                    DGD: tl.constexpr, HAS_X: tl.constexpr, HAS_S: tl.constexpr, BT: tl.constexpr,
                    DOT_PREC: tl.constexpr, STAGE: tl.constexpr):
    """Cotangents ``(dW, dD, dU, dX, d eta, d log alpha)`` of one chunk of the gated DGD step of ``W`` (rows: the
    whole matrix or one block; ``dU``, ``dX``, ``d eta``, ``d log alpha`` are then that block's partials) given
    those of ``W_end`` (``dwe``), the reads ``Y = W_t X_t`` (``dy``, with ``HAS_X``) and the steps' sum
    ``S = GD^T U`` (``ds``, with ``HAS_S``). The other arguments are the recompute of :func:`_gated_solve` and
    :func:`_chunk_gates` (``hope.ops.dgd.vjp.gated_step_vjp`` is the PyTorch twin, on the gate products); ``STAGE``:
    see :func:`_staged`."""
    t = tl.arange(0, BT)
    # W_end = exp(gl) W + (f * C)^T U,  f_t = exp(gl - g_t)
    egl = tl.exp(gl)
    f = tl.exp(gl - g)
    dw = egl * dwe
    dgl = egl * tl.sum(tl.sum(W * dwe, 1), 0)
    dce = tl.dot(U, tl.trans(_staged(dwe, STAGE)), input_precision=DOT_PREC)  # d(f * C)
    du = tl.dot(C * f[:, None], _staged(dwe, STAGE), input_precision=DOT_PREC)
    dc = f[:, None] * dce
    df = tl.sum(C * dce, 1)
    dgl += tl.sum(f * df, 0)
    dg = -f * df
    dgp = tl.zeros((BT,), dtype=tl.float32)
    dx = tl.zeros_like(U)

    # Y = exp(g) * (X W^T) + (Q o X U^T) C
    if HAS_X:
        causal = t[:, None] >= t[None, :]
        Q = tl.exp(tl.where(causal, g[:, None] - g[None, :], float("-inf")))
        eg = tl.exp(g)
        xw = tl.dot(X, tl.trans(_staged(W, STAGE)), input_precision=DOT_PREC)
        xu = tl.dot(X, tl.trans(U), input_precision=DOT_PREC)
        dg += eg * tl.sum(xw * dy, 1)
        dxw = eg[:, None] * dy
        dx += tl.dot(dxw, _staged(W, STAGE), input_precision=DOT_PREC)
        dw += tl.dot(tl.trans(dxw), X, input_precision=DOT_PREC)
        dmat = tl.dot(dy, tl.trans(C), input_precision=DOT_PREC)  # d(Q o XU)
        dc += tl.dot(tl.trans(Q * xu), dy, input_precision=DOT_PREC)
        dxu = Q * dmat
        qdq = dxu * xu
        dg += tl.sum(qdq, 1) - tl.sum(qdq, 0)
        dx += tl.dot(dxu, U, input_precision=DOT_PREC)
        du += tl.dot(tl.trans(dxu), X, input_precision=DOT_PREC)

    # S = GD^T U
    if HAS_S:
        dgd = tl.dot(U, tl.trans(ds), input_precision=DOT_PREC)
        du += tl.dot(GD, ds, input_precision=DOT_PREC)
    else:
        dgd = tl.zeros_like(GD)
    de = tl.zeros((BT,), dtype=tl.float32)
    if DGD:
        # C = Tinv R,  R = GD - (e exp(gp)) o B,  B = U W^T,  L = e o P o A,  A = U U^T
        dr = tl.dot(tl.trans(Tinv), dc, input_precision=DOT_PREC)
        strict = t[:, None] > t[None, :]
        dl = tl.where(strict, -tl.dot(dr, tl.trans(C), input_precision=DOT_PREC), 0.0)
        dgd += dr
        egp = tl.exp(gp)
        h = e * egp
        dh = -tl.sum(B * dr, 1)
        db = -h[:, None] * dr
        du += tl.dot(db, _staged(W, STAGE), input_precision=DOT_PREC)
        dw += tl.dot(tl.trans(db), U, input_precision=DOT_PREC)
        de += egp * dh
        dgp += h * dh
        de += tl.sum(P * A * dl, 1)
        pdp = e[:, None] * P * A * dl
        dgp += tl.sum(pdp, 1)
        dg -= tl.sum(pdp, 0)
        da = e[:, None] * P * dl
        du += tl.dot(da + tl.trans(da), U, input_precision=DOT_PREC)
    else:
        dgd += dc
    # GD = -e o D
    dd = -e[:, None] * dgd
    de -= tl.sum(D * dgd, 1)
    # gp = g - la, gl = g[n-1], g = cumsum(la)
    dg += dgp
    dg += tl.where(t == n - 1, dgl, 0.0)
    dla = tl.sum(tl.where(t[:, None] >= t[None, :], dg[:, None], 0.0), 0) - dgp
    if DGD:  # e = eta / (1 + eta |u|^2)
        nu = tl.sum(U * U, 1)
        den = 1.0 + eta * nu
        deta = de / (den * den)
        dnu = -de * eta * eta / (den * den)
        du += 2.0 * dnu[:, None] * U
    else:
        deta = de
    return dw, dd, du, dx, deta, dla


@triton.jit
def linear_chunk_bwd_kernel(
    w_ptr, u_ptr, d_ptr, x_ptr, eta_ptr, la_ptr,  # forward inputs
    dwend_ptr, dy_ptr, ds_ptr,  # output gradients
    dw_ptr, dd_ptr, du_ptr, dx_ptr, deta_ptr, dla_ptr,  # input gradients (du..dla: per-block partials)
    n, M, K, NB,
    DGD: tl.constexpr, HAS_X: tl.constexpr, BT: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    i_n = tl.program_id(0).to(tl.int64)
    i_m = tl.program_id(1)
    m0 = i_m * BM
    off_w = i_n * M * K
    off_u = i_n * n * K
    off_d = i_n * n * M
    U, D, W, eta, e, g, gp, gl, GD, A, P, Tinv, B, C = _chunk_prologue(
        u_ptr + off_u, d_ptr + off_d, w_ptr + off_w, eta_ptr + i_n * n, la_ptr + i_n * n, n, M, K, m0,
        DGD, BT, BM, BK, DOT_PREC)
    t = tl.arange(0, BT)
    tmask = t < n
    mm = m0 + tl.arange(0, BM)
    kk = tl.arange(0, BK)
    wmask = (mm[:, None] < M) & (kk[None, :] < K)
    w_offs = off_w + mm[:, None] * K + kk[None, :]
    dwe = tl.load(dwend_ptr + w_offs, mask=wmask, other=0.0).to(tl.float32)
    ds = tl.load(ds_ptr + w_offs, mask=wmask, other=0.0).to(tl.float32)
    if HAS_X:
        X = _load_tokens(x_ptr + off_u, n, K, BT, BK, 0)
        dy = _load_tokens(dy_ptr + off_d, n, M, BT, BM, m0)
    else:
        X = U
        dy = D
    dw, dd, du, dx, deta, dla = _gated_step_vjp(U, D, W, X, eta, e, g, gp, gl, GD, A, P, Tinv, B, C, dwe, dy, ds,
                                                n, DGD, HAS_X, True, BT, DOT_PREC, False)

    tl.store(dw_ptr + w_offs, dw.to(dw_ptr.dtype.element_ty), mask=wmask)
    dmask = tmask[:, None] & (mm[None, :] < M)
    tl.store(dd_ptr + off_d + t[:, None] * M + mm[None, :], dd.to(dd_ptr.dtype.element_ty), mask=dmask)
    # partials, laid out (N, NB, n, ...)
    i_p = i_n * NB + i_m
    umask = tmask[:, None] & (kk[None, :] < K)
    tl.store(du_ptr + i_p * n * K + t[:, None] * K + kk[None, :], du, mask=umask)
    if HAS_X:
        tl.store(dx_ptr + i_p * n * K + t[:, None] * K + kk[None, :], dx, mask=umask)
    tl.store(deta_ptr + i_p * n + t, deta, mask=tmask)
    tl.store(dla_ptr + i_p * n + t, dla, mask=tmask)
