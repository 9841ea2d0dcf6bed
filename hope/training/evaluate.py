"""Held-out evaluation: mean next-token loss and bits per byte, summed over processes."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from hope.training.parallel import all_reduce


@torch.no_grad()
def evaluate(model: nn.Module, sequences: torch.Tensor, batch_size: int, token_bytes: torch.Tensor,
             device: torch.device, autocast: contextlib.AbstractContextManager | None = None
             ) -> dict[str, float]:
    """Score ``sequences (N, T)`` (this process's share); every process must call this (FSDP).

    ``loss``: mean nats per predicted token. ``bpb``: nats over tokens that stand for text, divided by their
    UTF-8 bytes and ln 2 (separator tokens, with 0 bytes, are left out of both sums).
    """
    was_training = model.training
    model.eval()
    token_bytes = token_bytes.to(device)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # nats, tokens, text nats, bytes
    for i in range(0, sequences.shape[0], batch_size):
        x = sequences[i:i + batch_size].to(device)
        with autocast or contextlib.nullcontext():
            logits = model(x).logits
        nats = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), x[:, 1:].flatten(), reduction="none")
        nbytes = token_bytes[x[:, 1:].flatten()]
        count = torch.tensor(nats.numel(), device=device, dtype=torch.float64)
        sums += torch.stack([nats.sum().double(), count, (nats * (nbytes > 0)).sum().double(),
                             nbytes.sum().double()])
    sums = all_reduce(sums)
    model.train(was_training)
    nats, tokens, text_nats, nbytes = sums.tolist()
    return {"loss": nats / max(tokens, 1), "bpb": text_nats / max(nbytes, 1) / math.log(2), "tokens": tokens}
