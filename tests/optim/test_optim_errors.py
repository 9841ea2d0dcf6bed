"""Bad options and unsupported layouts raise clear errors (naming the option or the parameter shape)."""

from __future__ import annotations

import pytest
import torch

from hope.optim import DMGD, M3, AssocMomentum, Muon, build_optimizer, newton_schulz


def _p(*shape: int) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.zeros(shape))


@pytest.mark.parametrize("make, match", [
    (lambda: AssocMomentum([_p(2, 2)], objective="cosine"), "objective"),
    (lambda: AssocMomentum([_p(2, 2)], momentum=1.0), "momentum"),
    (lambda: AssocMomentum([_p(2, 2)], lr=-1.0), "lr"),
    (lambda: AssocMomentum([_p(2, 2)], layout="diagonal"), "layout"),
    (lambda: AssocMomentum([_p(2, 2)], feature_map="cube"), "feature_map"),
    (lambda: AssocMomentum([_p(2, 2)], values="adam"), "values"),
    (lambda: AssocMomentum([_p(2, 2)], output="svd"), "output"),
    (lambda: AssocMomentum([_p(2, 2)], objective="l2", nesterov=True), "nesterov"),
    (lambda: AssocMomentum([_p(2, 2)], scale="big"), "scale"),
    (lambda: AssocMomentum([{"params": [_p(2, 2)], "ns_steps": 0}]), "ns_steps"),
    (lambda: Muon([_p(2, 2)], ns_method="septic"), "ns_method"),
    (lambda: DMGD([_p(2, 2)], hidden=-1), "hidden"),
    (lambda: DMGD([_p(2, 2)], activation="relu"), "activation"),
    (lambda: M3([_p(2, 2)], betas=(0.9, 0.99)), "betas"),
    (lambda: M3([_p(2, 2)], slow_every=0), "slow_every"),
    (lambda: M3([_p(2, 2)], accumulation="median"), "accumulation"),
    (lambda: M3([_p(2, 2)], precondition="during"), "precondition"),
    (lambda: M3([_p(2, 2)], betas=(0.9, 1.0, 0.9)), "beta2"),
    (lambda: build_optimizer("adam", [_p(2, 2)]), "unknown optimizer"),
    (lambda: newton_schulz(torch.zeros(3)), r"shape \(3,\)"),
])
def test_bad_options(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="adamw_betaz"):
        Muon([_p(2, 2)], adamw_betaz=(0.9, 0.9))


@pytest.mark.parametrize("make", [
    lambda p: Muon([{"params": [p], "adamw": False}]),
    lambda p: AssocMomentum([p], output="newton_schulz", adamw=False),
    lambda p: M3([{"params": [p], "adamw": False}]),
    lambda p: DMGD([p], output="newton_schulz", adamw=False),
])
def test_vector_forced_off_adamw_names_its_shape(make) -> None:
    p = _p(5)
    opt = make(p)
    p.grad = torch.ones(5)
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        opt.step()


def test_sparse_gradient_rejected() -> None:
    emb = torch.nn.Embedding(4, 3, sparse=True)
    opt = AssocMomentum(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match=r"sparse gradients \(parameter shape \(4, 3\)\)"):
        opt.step()
