"""Helpers shared by every chunked op."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


def activation(x: Tensor, act: str) -> Tensor:
    """The memory non-linearity ``s``."""
    if act == "silu":
        return F.silu(x)
    if act == "gelu":
        return F.gelu(x)
    raise ValueError(f"unknown memory activation {act!r}; expected 'silu' or 'gelu'")


def activation_grad(x: Tensor, act: str) -> Tensor:
    """The derivative ``s'(x)``, written out so the inner gradient needs no autograd."""
    if act == "silu":
        sig = torch.sigmoid(x)
        return sig * (1 + x * (1 - sig))
    if act == "gelu":
        cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
        pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return cdf + x * pdf
    raise ValueError(f"unknown memory activation {act!r}; expected 'silu' or 'gelu'")


def activation_grad2(x: Tensor, act: str) -> Tensor:
    """The second derivative ``s''(x)`` (the inner gradient's slope is differentiated in the outer backward)."""
    if act == "silu":
        sig = torch.sigmoid(x)
        return sig * (1 - sig) * (2 + x * (1 - 2 * sig))
    if act == "gelu":
        pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return pdf * (2 - x * x)
    raise ValueError(f"unknown memory activation {act!r}; expected 'silu' or 'gelu'")
