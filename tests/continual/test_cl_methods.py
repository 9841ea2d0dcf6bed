"""Each method's update rule on a two-parameter example with a known answer, and the rules in a learner."""

import copy
import math
import random

import pytest
import torch
from clhelpers import tiny_lm

from hope.continual import cipher_stream
from hope.continual.methods import EWC, SPG, Naive
from hope.continual.methods.agem import agem_project
from hope.continual.methods.das import gate_gradient, mask_units
from hope.continual.methods.ewc import ewc_penalty
from hope.continual.methods.lwf import distillation_loss, distillation_target
from hope.continual.methods.replay import reservoir_add
from hope.continual.methods.spg import mask_update, zscore_importance


def test_ewc_penalty_gradient():
    theta = torch.tensor([1.0, 2.0], requires_grad=True)
    anchor, fisher = torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])
    pen = ewc_penalty({"w": theta}, {"w": anchor}, {"w": fisher}, lam=4.0)
    assert pen.item() == pytest.approx(0.5 * 4.0 * (2 * 1 + 3 * 1))  # 10
    pen.backward()
    assert theta.grad.tolist() == pytest.approx([4.0 * 2 * 1, 4.0 * 3 * 1])  # lam * F * (theta - anchor)


def test_agem_projection():
    # SGD with lr 1: g = (1, -1), g_ref = (0, 1): g.g_ref = -1 < 0, so g~ = g - (-1/1) g_ref = (1, 0)
    g, g_ref = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0])
    d = agem_project(-g, g_ref)
    assert d.tolist() == pytest.approx([-1.0, 0.0])
    assert torch.dot(d, g_ref) <= 0
    # no conflict: the update is untouched
    assert agem_project(torch.tensor([-1.0, -2.0]), g_ref).tolist() == [-1.0, -2.0]
    # general case: the projection removes exactly the conflicting component
    d2 = agem_project(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 1.0]))
    assert d2.tolist() == pytest.approx([3.0 - 3.5, 4.0 - 3.5])


def test_lwf_distillation_target_and_loss():
    old = torch.tensor([[0.0, math.log(3.0)]])
    assert distillation_target(old, 1.0)[0].tolist() == pytest.approx([0.25, 0.75])
    s3 = math.sqrt(3.0)  # temperature 2: 3^(1/2) against 1
    assert distillation_target(old, 2.0)[0].tolist() == pytest.approx([1 / (1 + s3), s3 / (1 + s3)])
    z = old.clone().requires_grad_(True)
    loss = distillation_loss(z, old, 2.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and z.grad.abs().max().item() < 1e-6
    z2 = torch.zeros(1, 2, requires_grad=True)  # uniform student: gradient T^2 * (p - q) / T = T * (p - q)
    distillation_loss(z2, old, 2.0).backward()
    q = distillation_target(old, 2.0)[0]
    assert z2.grad[0].tolist() == pytest.approx((2.0 * (torch.tensor([0.5, 0.5]) - q)).tolist(), abs=1e-6)


def test_spg_importance_and_mask_on_update():
    imp = zscore_importance(torch.tensor([1.0, 3.0]))  # mean 2, unbiased std sqrt(2): z = -+1/sqrt(2)
    assert imp.tolist() == pytest.approx([math.tanh(1 / math.sqrt(2))] * 2)
    assert zscore_importance(torch.tensor([5.0, 5.0])).tolist() == [0.0, 0.0]
    assert mask_update(torch.tensor([0.5, -0.5]), torch.tensor([1.0, 0.25])).tolist() == [0.0, -0.375]


def test_das_gate_gradient_and_unit_mask():
    w = torch.tensor([[1.0, 2.0], [3.0, -1.0]])  # two units (rows)
    gw = torch.tensor([[0.5, 0.5], [1.0, 2.0]])
    assert gate_gradient(w, gw).tolist() == [1.5, 1.0]  # 1*0.5 + 2*0.5, 3*1 - 1*2
    # the same number from an explicit gate: y = g * (W x), dL/dg at g = 1
    x = torch.tensor([0.3, -0.7])
    g = torch.ones(2, requires_grad=True)
    wr = w.clone().requires_grad_(True)
    coef = torch.tensor([2.0, -1.0])
    (coef * g * (wr @ x)).sum().backward()
    assert gate_gradient(w, wr.grad).tolist() == pytest.approx(g.grad.tolist())
    assert mask_units(torch.ones(2, 2), torch.tensor([1.0, 0.5])).tolist() == [[0.0, 0.0], [0.5, 0.5]]
    assert mask_units(torch.tensor(2.0), torch.tensor([0.25])).item() == 1.5  # a scalar parameter (e.g. eta)


def test_reservoir_keeps_first_k_then_uniform():
    rng, buf, n = random.Random(0), [], 0
    for i in range(3):
        n = reservoir_add(buf, i, n, 3, rng)
    assert buf == [0, 1, 2] and n == 3
    counts = [0] * 10
    for seed in range(2000):
        rng, buf, n = random.Random(seed), [], 0
        for i in range(10):
            n = reservoir_add(buf, i, n, 3, rng)
        for v in buf:
            counts[v] += 1
    # each of the 10 elements stays with probability 3/10: 600 of 2000 (binomial sd about 20)
    assert all(abs(c - 600) < 100 for c in counts), counts
    with pytest.raises(ValueError, match="capacity"):
        reservoir_add([], 0, 0, 0, rng)


def test_mask_acts_on_the_final_adam_update():
    """Under Adam a gradient mask of 0.5 is undone by the rescaling; SPG's mask on the update is not."""
    stream = cipher_stream(1, 4, 0.0, 2, 1)
    batch = stream.experiences[0].train[:4]
    a = Naive(tiny_lm(), lr=1e-2, max_len=16, grad_clip=None)
    b = SPG(copy.deepcopy(a.model), lr=1e-2, max_len=16, grad_clip=None)
    b.importance = {n: torch.full_like(p, 0.5) for n, p in b.trainable().items()}
    before = {n: p.detach().clone() for n, p in a.trainable().items()}
    a.observe(batch)
    b.observe(batch)
    for n, p in b.trainable().items():
        da, db = a.trainable()[n].detach() - before[n], p.detach() - before[n]
        torch.testing.assert_close(db, 0.5 * da, rtol=1e-5, atol=1e-8)


def test_ewc_fisher_is_per_example():
    lr = EWC(tiny_lm(), max_len=16, fisher_samples=4)
    exs = cipher_stream(1, 4, 0.0, 1, 1).experiences[0].train[:2]
    f = lr.empirical_fisher(exs)
    expected = {n: torch.zeros_like(p) for n, p in lr.trainable().items()}
    for ex in exs:  # the mean of squared single-example gradients, not the square of the mean gradient
        lr.model.zero_grad()
        logits, labels, _ = lr.forward([ex])
        from hope.continual.learner import target_loss

        target_loss(logits, labels).backward()
        for n, p in lr.trainable().items():
            expected[n] += p.grad**2 / 2
    for n in f:
        torch.testing.assert_close(f[n], expected[n])
