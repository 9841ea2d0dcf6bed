"""DMGD: linear memory = momentum; analytic inner gradients = autograd; the MLP changes the update."""

from __future__ import annotations

import pytest
import torch

from hope.optim import DMGD, AssocMomentum
from hope.optim.dmgd import inner_grads, read_out

SHAPES = [(4, 6), (7, 3), (5,)]


def _run(opt_fn, steps: int = 5, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ws = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in SHAPES]
    opt = opt_fn(ws)
    for _ in range(steps):
        for w in ws:
            w.grad = torch.randn(w.shape, generator=gen, dtype=torch.float64)
        opt.step()
    return [w.detach() for w in ws]


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-13)


def test_linear_memory_is_sgd_momentum() -> None:
    _assert_same(_run(lambda ws: DMGD(ws, lr=0.05, momentum=0.9, hidden=0)),
                 _run(lambda ws: torch.optim.SGD(ws, lr=0.05, momentum=0.9)))


def test_mlp_with_zero_mlp_lr_is_sgd_momentum() -> None:
    """W1 starts at 0 and never moves, so the MLP branch reads 0: the memory is its linear skip."""
    _assert_same(_run(lambda ws: DMGD(ws, lr=0.05, momentum=0.9, hidden=4, mlp_lr=0.0)),
                 _run(lambda ws: torch.optim.SGD(ws, lr=0.05, momentum=0.9)))


def test_linear_l2_memory_is_delta_momentum() -> None:
    _assert_same(_run(lambda ws: DMGD(ws, lr=0.05, momentum=0.9, hidden=0, objective="l2", mem_lr=0.05)),
                 _run(lambda ws: AssocMomentum(ws, lr=0.05, momentum=0.9, objective="l2", mem_lr=0.05)))


def test_mlp_memory_changes_the_update() -> None:
    deep = _run(lambda ws: DMGD(ws, lr=0.05, momentum=0.9, hidden=4, mlp_lr=0.5, init_scale=3.0))
    linear = _run(lambda ws: DMGD(ws, lr=0.05, momentum=0.9, hidden=0))
    assert (deep[0] - linear[0]).abs().max() > 1e-4


@pytest.mark.parametrize("objective", ["dot", "l2"])
@pytest.mark.parametrize("act", ["silu", "tanh", "gelu", "identity"])
@pytest.mark.parametrize("c", [1.0, 2.5])
def test_inner_gradients_match_autograd(objective: str, act: str, c: float) -> None:
    gen = torch.Generator().manual_seed(1)
    a_, b_, h = 3, 5, 4
    a = torch.randn(a_, b_, generator=gen, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(a_, h, generator=gen, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(h, b_, generator=gen, dtype=torch.float64, requires_grad=True)
    k = torch.randn(a_, b_, generator=gen, dtype=torch.float64)
    s = {"silu": torch.nn.functional.silu, "tanh": torch.tanh, "gelu": torch.nn.functional.gelu,
         "identity": lambda x: x}[act]
    y = a @ k.t() + w1 @ s(w2 @ k.t())  # memory applied to every key (one per row of K)
    target = c * torch.eye(a_, dtype=torch.float64)
    loss = -(y * target).sum() if objective == "dot" else 0.5 * ((y - target) ** 2).sum()
    ref = torch.autograd.grad(loss, (a, w1, w2))
    ours = inner_grads(a.detach(), w1.detach(), w2.detach(), k, objective, act, value_scale=c)
    for r, o in zip(ref, ours):
        torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(read_out(a.detach(), w1.detach(), w2.detach(), act),
                               a.detach() + w1.detach() @ s(w2.detach()))


def test_dmgd_newton_schulz_output_and_state_shapes() -> None:
    w = torch.nn.Parameter(torch.randn(6, 4, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    opt = DMGD([w, b], hidden=3, output="newton_schulz")
    w.grad, b.grad = torch.randn(6, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    opt.step()
    st = opt.state[w]
    assert st["mem_a"].shape == (6, 4) and st["mem_w1"].shape == (4, 3) and st["mem_w2"].shape == (3, 6)
    assert "adam_exp_avg" in opt.state[b]  # 1-D params cannot be orthogonalized: AdamW fallback
