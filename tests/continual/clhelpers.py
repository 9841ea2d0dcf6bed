"""Tiny models and streams shared by the continual-learning tests."""

from __future__ import annotations

import torch

from hope import HopeConfig, HopeLM


def tiny_lm(mixer: str = "attention", seed: int = 0, **kw) -> HopeLM:
    torch.manual_seed(seed)
    base = dict(vocab_size=257, dim=32, n_layers=2, n_heads=2, mixer=mixer, cms_hidden=64, backend="chunk",
                max_seq_len=64, chunk_memory=4, chunk_other=8,
                cms_chunk_sizes=(None,) if mixer == "attention" else (4, 8, None))
    base.update(kw)
    return HopeLM(HopeConfig(**base))
