"""build_optimizer by name and the param_groups helper (decay on matrices only)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hope.optim import DMGD, M3, NAMES, AssocMomentum, Muon, build_optimizer, param_groups


class TinyLM(nn.Module):
    def __init__(self, tie: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.lm_head = nn.Linear(8, 11, bias=False)
        if tie:
            self.lm_head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(torch.relu(self.proj(self.embed(ids)))))


def test_param_groups_decay_matrices_only() -> None:
    groups = {tuple(g["names"]): g for g in param_groups(TinyLM(tie=False), 0.1)}
    assert groups[("proj.weight",)]["weight_decay"] == 0.1 and groups[("proj.weight",)]["adamw"] is None
    assert groups[("lm_head.weight",)] == {**groups[("lm_head.weight",)], "weight_decay": 0.1, "adamw": True}
    assert groups[("embed.weight",)]["weight_decay"] == 0.0 and groups[("embed.weight",)]["adamw"] is True
    no_decay = groups[("proj.bias", "norm.weight", "norm.bias")]
    assert no_decay["weight_decay"] == 0.0 and no_decay["adamw"] is True


def test_param_groups_tied_head_counted_once() -> None:
    model = TinyLM(tie=True)
    groups = param_groups(model, 0.1, decay_embeddings=True)
    names = [n for g in groups for n in g["names"]]
    assert names.count("embed.weight") == 1 and "lm_head.weight" not in names
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    emb = next(g for g in groups if "embed.weight" in g["names"])
    assert emb["weight_decay"] == 0.1


@pytest.mark.parametrize("name", NAMES)
def test_build_every_name_and_step(name: str) -> None:
    torch.manual_seed(0)
    model = TinyLM(tie=False)
    opt = build_optimizer(name, model, lr=1e-3, weight_decay=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.tensor([[1, 2, 3]])).logsumexp(-1).sum().backward()
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    expected = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD, "muon": Muon, "m3": M3,
                "assoc_momentum": AssocMomentum, "dmgd": DMGD}[name]
    assert type(opt) is expected
    decays = {p.ndim: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays[1] == 0.0


def test_factory_adamw_recipe_and_params_input() -> None:
    p = nn.Parameter(torch.zeros(3, 3))
    opt = build_optimizer("AdamW", [p])
    assert opt.param_groups[0]["betas"] == (0.9, 0.95) and opt.param_groups[0]["weight_decay"] == 0.1
    assert build_optimizer("muon", [p], lr=0.02, scale="shape").param_groups[0]["scale"] == "shape"
