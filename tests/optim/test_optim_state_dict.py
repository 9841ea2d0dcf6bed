"""state_dict round trip: save mid-run, resume, and the next steps are bit-identical (every optimizer)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from hope.optim import DMGD, M3, AssocMomentum, MultiFrequency, Muon, build_optimizer, param_groups


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.up = nn.Linear(4, 6)  # weight 6 x 4 (tall), bias
        self.down = nn.Linear(6, 4, bias=False)
        self.norm = nn.LayerNorm(4)
        self.conv = nn.Parameter(torch.randn(3, 2, 2) * 0.1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.down(torch.tanh(self.up(self.emb(ids))))
        return self.norm(h).sum() * self.conv.sum() + h.pow(2).mean()


def _multi(model: nn.Module) -> MultiFrequency:
    groups = param_groups(model, 0.1)
    for i, g in enumerate(groups):
        g["every"] = i + 1
    return MultiFrequency(Muon(groups, lr=1e-2))


MAKERS = {
    "assoc_dot": lambda m: AssocMomentum(m.parameters(), lr=1e-2, nesterov=True, weight_decay=0.01),
    "assoc_l2_rms": lambda m: AssocMomentum(m.parameters(), objective="l2", mem_lr=0.1, values="rms",
                                            feature_map="normalize"),
    "assoc_l2_elementwise": lambda m: AssocMomentum(m.parameters(), objective="l2", layout="elementwise",
                                                    mem_lr=0.1),
    "muon": lambda m: Muon(param_groups(m, 0.1), lr=1e-2),
    "dmgd": lambda m: DMGD(m.parameters(), hidden=4, objective="l2", mem_lr=0.1),
    "dmgd_ns": lambda m: DMGD(m.parameters(), hidden=3, output="newton_schulz"),
    "m3_ema": lambda m: M3(param_groups(m, 0.1), slow_every=2, alpha=0.5),
    "m3_sum": lambda m: M3(m.parameters(), slow_every=2, accumulation="sum", precondition="before"),
    "multi_frequency_muon": _multi,
    "multi_frequency_adamw": lambda m: MultiFrequency(torch.optim.AdamW(
        [{"params": [p], "every": 1 + i % 3} for i, p in enumerate(m.parameters())], lr=1e-2), "sum"),
    "factory_sgd": lambda m: build_optimizer("sgd", m, lr=1e-2, momentum=0.9),
}


def _step(model: nn.Module, opt: torch.optim.Optimizer, t: int) -> None:
    ids = torch.randint(0, 10, (5,), generator=torch.Generator().manual_seed(t))
    opt.zero_grad()
    model(ids).backward()
    opt.step()


@pytest.mark.parametrize("name", list(MAKERS))
def test_resume_is_exact(name: str) -> None:
    make = MAKERS[name]
    torch.manual_seed(0)
    model = Net()
    opt = make(model)
    for t in range(3):
        _step(model, opt, t)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    for t in range(3, 7):
        _step(model, opt, t)

    torch.manual_seed(1)  # a different init, overwritten by the checkpoint
    resumed, fresh = Net(), Net()
    resumed.load_state_dict(saved_model)
    fresh.load_state_dict(saved_model)
    opt2, opt3 = make(resumed), make(fresh)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf))
    for t in range(3, 7):
        _step(resumed, opt2, t)
        _step(fresh, opt3, t)
    for (k, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    # guard: without the optimizer state the continuation differs, so the check above can fail
    final, without_state = model.state_dict().values(), fresh.state_dict().values()
    assert any(not torch.equal(a, c) for a, c in zip(final, without_state))
