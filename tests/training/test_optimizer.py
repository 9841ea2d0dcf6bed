"""The schedule (warmup + cosine) and the optimizer choice, with and without hope.optim."""

from __future__ import annotations

import sys

import pytest
import torch

from hope import HopeConfig, HopeLM
from hope.training.config import TrainConfig
from hope.training.optimizer import build_optimizer, lr_factor, set_lr


def test_warmup_then_cosine_to_the_floor() -> None:
    cfg = TrainConfig(max_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.55)
    assert lr_factor(110, cfg) == pytest.approx(0.1) and lr_factor(500, cfg) == pytest.approx(0.1)
    factors = [lr_factor(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


def _model() -> HopeLM:
    return HopeLM(HopeConfig.from_name("transformer-tiny", dim=32, n_layers=1, n_heads=2, cms_hidden=32))


def test_adamw_decays_matrices_only() -> None:
    opt = build_optimizer(_model(), TrainConfig(lr=1e-3, weight_decay=0.1))
    assert isinstance(opt, torch.optim.AdamW)
    for group in opt.param_groups:
        assert all(p.ndim >= 2 for p in group["params"]) or group["weight_decay"] == 0.0
        assert group["betas"] == (0.9, 0.95)
    assert any(g["weight_decay"] == 0.1 for g in opt.param_groups)
    set_lr(opt, 0, TrainConfig(lr=1e-3, warmup_steps=4))
    assert all(g["lr"] == pytest.approx(2.5e-4) for g in opt.param_groups)


def test_without_hope_optim_only_adamw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hope.optim", None)  # import fails as if the package were absent
    opt = build_optimizer(_model(), TrainConfig(weight_decay=0.1))
    assert isinstance(opt, torch.optim.AdamW)
    decayed = [p for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    assert decayed and all(p.ndim >= 2 for p in decayed)
    with pytest.raises(ValueError, match="optimizer 'muon' needs hope.optim"):
        build_optimizer(_model(), TrainConfig(optimizer="muon"))
