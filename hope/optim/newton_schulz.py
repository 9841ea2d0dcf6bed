"""Newton-Schulz orthogonalization: the non-linear output sigma of a momentum memory (paper Eq. 24).

For a matrix G = U S V^T, Newton-Schulz iterations push every singular value towards 1 and return
approximately U V^T (the orthogonal polar factor). The paper reads one iteration as a gradient step on
||O^T O - I||_F^2 (arXiv Eq. 42-44): the cubic map O <- 1.5 O - 0.5 O O^T O is exactly such a step.
``quintic`` uses Muon's tuned odd polynomial (a, b, c) = (3.4445, -4.7750, 2.0315), which in 5 steps
brings singular values that are not tiny relative to the largest into roughly [0.7, 1.2] (very small
ones, e.g. the bottom of a square Gaussian matrix's spectrum, are only partly lifted): fast, not exact.
``cubic`` converges to the exact polar factor (more steps needed).

Both work on batches (..., m, n): same-shaped matrices are stacked and orthogonalized by one batched
matmul chain (``newton_schulz_many``).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

QUINTIC = (3.4445, -4.7750, 2.0315)
METHODS = ("quintic", "cubic")


def newton_schulz(g: Tensor, steps: int = 5, method: str = "quintic", eps: float = 1e-7,
                  dtype: torch.dtype | None = None) -> Tensor:
    """Approximately orthogonalize the last two dims of ``g`` (shape (..., m, n), m, n >= 1).

    The input is first scaled by its Frobenius norm (so every singular value is <= 1), and tall
    matrices are transposed so the Gram matrix is min(m, n)^2. ``dtype`` is the compute dtype
    (default: float32, or float64 when the input is float64); the result has ``g``'s dtype.
    """
    if g.ndim < 2:
        raise ValueError(f"newton_schulz needs a matrix (..., m, n), got shape {tuple(g.shape)}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if dtype is None:
        dtype = torch.float64 if g.dtype == torch.float64 else torch.float32
    x = g.to(dtype)
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.mT
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + eps)
    for _ in range(steps):
        gram = x @ x.mT
        if method == "quintic":
            a, b, c = QUINTIC
            x = a * x + (b * gram + c * (gram @ gram)) @ x
        else:
            x = 1.5 * x - 0.5 * gram @ x
    if tall:
        x = x.mT
    return x.to(g.dtype)


def newton_schulz_many(mats: list[Tensor], steps: int = 5, method: str = "quintic",
                       dtype: torch.dtype | None = None) -> list[Tensor]:
    """Orthogonalize a list of matrices, one batched call per (shape, dtype, device) bucket."""
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, m in enumerate(mats):
        if m.ndim != 2:
            raise ValueError(f"newton_schulz_many expects 2-D matrices, got shape {tuple(m.shape)}")
        buckets[(tuple(m.shape), m.dtype, m.device)].append(i)
    out: list[Tensor | None] = [None] * len(mats)
    for idx in buckets.values():
        stacked = torch.stack([mats[i] for i in idx])
        result = newton_schulz(stacked, steps=steps, method=method, dtype=dtype)
        for j, i in enumerate(idx):
            out[i] = result[j]
    return out  # type: ignore[return-value]
