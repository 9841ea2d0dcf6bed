"""Every optimizer trains the library's own models at its documented default: 30 steps at the README's
learning rate on tiny HOPE and transformer-tiny stay finite and end below the first loss.

One fixed batch of real text (Python's documentation topics, a stdlib corpus), gradient clipping 1.0 as in
the main job; the loss is the training loss of that batch, so the comparison is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pydoc_data.topics import topics

import pytest
import torch

from hope import HopeConfig, HopeLM
from hope.optim import DMGD, M3, NAMES, AssocMomentum, Muon, build_optimizer
from hope.training.config import TrainConfig

LR = TrainConfig().lr  # the README's (and train.py's) peak learning rate
STEPS = 30


def _batch(batch: int = 2, length: int = 64) -> torch.Tensor:
    text = "\n".join(topics[k] for k in sorted(topics)).encode()
    starts = torch.randint(0, len(text) - length - 1, (batch,), generator=torch.Generator().manual_seed(0))
    return torch.stack([torch.tensor(list(text[s : s + length + 1])) for s in starts.tolist()])


def _losses(preset: str, make: Callable[[torch.nn.Module], torch.optim.Optimizer]) -> list[float]:
    torch.manual_seed(0)
    model = HopeLM(HopeConfig.from_name(preset, vocab_size=257))
    opt = make(model)
    x = _batch()
    out = []
    for _ in range(STEPS):
        loss = model(x[:, :-1], labels=x[:, 1:]).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        out.append(loss.item())
    return out


CONSTRUCTORS = {
    "M3": lambda m, lr: M3(m.parameters(), lr=lr),
    "Muon": lambda m, lr: Muon(m.parameters(), lr=lr),
    "AssocMomentum": lambda m, lr: AssocMomentum(m.parameters(), lr=lr),
    "DMGD": lambda m, lr: DMGD(m.parameters(), lr=lr),
}
CASES = [(f"build_optimizer({n!r})", lambda m, lr, n=n: build_optimizer(n, m, lr=lr, weight_decay=0.1), LR)
         for n in NAMES]
CASES += [(f"{n}(lr)", make, LR) for n, make in CONSTRUCTORS.items()]
CASES += [("build_optimizer('m3'), the README example's lr", CASES[NAMES.index("m3")][1], 1e-3)]


@pytest.mark.parametrize("preset", ["tiny", "transformer-tiny"])
@pytest.mark.parametrize("name,make,lr", CASES, ids=[c[0] for c in CASES])
def test_optimizer_default_trains(preset: str, name: str, make, lr: float) -> None:
    losses = _losses(preset, lambda m: make(m, lr))
    assert all(math.isfinite(v) for v in losses), f"{name} at lr {lr} on {preset}: non-finite loss {losses}"
    assert losses[-1] < losses[0], f"{name} at lr {lr} on {preset}: loss {losses[0]:.4f} -> {losses[-1]:.4f}"
