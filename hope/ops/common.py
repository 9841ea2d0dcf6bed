"""Helpers shared by every chunked op."""

from __future__ import annotations

import torch
from torch import Tensor


def segments(length: int, offset: int, chunk_size: int) -> list[tuple[int, int]]:
    """Split ``[0, length)`` at chunk boundaries, given ``offset`` tokens already in the current chunk."""
    bounds, start = [], 0
    while start < length:
        end = min(length, start + chunk_size - offset)
        bounds.append((start, end))
        offset = (offset + end - start) % chunk_size
        start = end
    return bounds


def l2norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Normalize the last dimension to unit L2 norm."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)
