"""Causal softmax attention with rotary embeddings (SDPA) and a KV cache: the mixer of Hope-Attention and
Transformer++ (Llama-style, no biases)."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


@dataclasses.dataclass
class KVCache:
    """Keys and values of every past position, ``(B, H, T_past, d)`` (already rotated)."""

    k: Tensor
    v: Tensor

    @property
    def length(self) -> int:
        return self.k.shape[-2]

    def detach(self) -> KVCache:
        return KVCache(self.k.detach(), self.v.detach())


def rotary(x: Tensor, start: int, theta: float) -> Tensor:
    """Rotate ``x (B, H, T, d)`` by RoPE (Su et al. 2021) for positions ``start .. start + T - 1``."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    pos = torch.arange(start, start + x.shape[-2], device=x.device, dtype=torch.float32)
    ang = pos[:, None] * inv[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention over a pre-normalized input; ``state`` is a :class:`KVCache`."""

    def __init__(self, dim: int, n_heads: int, rope_theta: float = 10000.0) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim={dim} must be divisible by n_heads={n_heads}")
        self.dim, self.n_heads, self.rope_theta = dim, n_heads, rope_theta
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        nn.init.normal_(self.qkv.weight, std=std)
        nn.init.normal_(self.out_proj.weight, std=std)

    @classmethod
    def from_config(cls, cfg) -> CausalSelfAttention:
        return cls(cfg.dim, cfg.n_heads, cfg.rope_theta)

    def forward(self, a: Tensor, state: KVCache | None = None) -> tuple[Tensor, KVCache]:
        q, k, v = rearrange(self.qkv(a), "b t (n h d) -> n b h t d", n=3, h=self.n_heads)
        past = 0 if state is None else state.length
        q, k = rotary(q, past, self.rope_theta), rotary(k, past, self.rope_theta)
        if state is not None:
            k, v = torch.cat([state.k, k], dim=-2), torch.cat([state.v, v], dim=-2)
        t = q.shape[-2]
        if past == 0:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # new queries see every cached key and the new keys up to themselves
            mask = torch.ones(t, past + t, dtype=torch.bool, device=a.device).tril(diagonal=past)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(rearrange(o, "b h t d -> b t (h d)")), KVCache(k, v)
