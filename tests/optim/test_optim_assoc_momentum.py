"""AssocMomentum: dot objective = torch SGD momentum; delta (l2) momentum against hand-computed steps."""

from __future__ import annotations

import pytest
import torch

from hope.optim import AssocMomentum

SHAPES = [(4, 6), (6, 3), (5,), (2, 3, 2)]


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in SHAPES]


def _grads(step: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_dot_equals_torch_sgd(nesterov: bool, weight_decay: float) -> None:
    ours, ref = _params(), _params()
    opt = AssocMomentum(ours, lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay,
                        decoupled_weight_decay=False)
    sgd = torch.optim.SGD(ref, lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay)
    for t in range(6):
        for p, q, g in zip(ours, ref, _grads(t)):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        sgd.step()
        for p, q in zip(ours, ref):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-14)


def test_dot_momentum_is_not_plain_sgd() -> None:
    """Guard: the parity test above would fail if the memory ignored its past (momentum=0 differs)."""
    a, b = _params(), _params()
    o1, o2 = AssocMomentum(a, lr=0.05, momentum=0.9), AssocMomentum(b, lr=0.05, momentum=0.0)
    for t in range(2):
        for p, q, g in zip(a, b, _grads(t)):
            p.grad, q.grad = g.clone(), g.clone()
        o1.step()
        o2.step()
    assert not torch.allclose(a[0], b[0])


def _two_steps(layout: str) -> torch.Tensor:
    w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = AssocMomentum([w], lr=1.0, momentum=0.5, mem_lr=0.5, objective="l2", layout=layout)
    for g in ([1.0, 2.0], [1.0, 1.0]):
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return w.detach()


def test_delta_momentum_vector_hand_computed() -> None:
    # w in R^2 is one row: key g, value 1.  m <- a m - eta (m.g) g + eta g, w <- w - m.  a = eta = 0.5.
    # step 1: g = (1, 2): m = 0.5 (1, 2) = (0.5, 1);                   w = (-0.5, -1)
    # step 2: g = (1, 1): m.g = 1.5, m = (0.25, 0.5) - 0.75 (1, 1) + 0.5 (1, 1) = (0, 0.25); w = (-0.5, -1.25)
    torch.testing.assert_close(_two_steps("matrix"), torch.tensor([-0.5, -1.25], dtype=torch.float64))


def test_delta_momentum_elementwise_hand_computed() -> None:
    # m <- (a - eta g^2) m + eta g per coordinate.
    # step 1: m = (0.5, 1), w = (-0.5, -1)
    # step 2: g^2 = 1 so m = 0 * m + 0.5 (1, 1) = (0.5, 0.5); w = (-1, -1.5)
    torch.testing.assert_close(_two_steps("elementwise"), torch.tensor([-1.0, -1.5], dtype=torch.float64))


def _delta_loops(m: list[list[float]], keys: list[list[float]], alpha: float,
                 eta: float) -> list[list[float]]:
    """One step of m <- alpha m - eta sum_r (m k_r - e_r) k_r^T, with explicit index loops (m: a x b)."""
    a, b = len(m), len(m[0])
    new = [[alpha * m[i][j] for j in range(b)] for i in range(a)]
    for r, k in enumerate(keys):
        pred = [sum(m[i][c] * k[c] for c in range(b)) - (1.0 if i == r else 0.0) for i in range(a)]
        for i in range(a):
            for j in range(b):
                new[i][j] -= eta * pred[i] * k[j]
    return new


@pytest.mark.parametrize("shape", [(2, 3), (3, 2)])
def test_delta_momentum_matrix_two_steps_loops(shape: tuple[int, int]) -> None:
    """Matrix layout: keys are the rows of the short side (a tall parameter is handled transposed)."""
    alpha, eta, lr = 0.8, 0.3, 0.1
    gs = [torch.tensor([[0.5, -1.0, 0.25], [1.0, 0.5, -0.5]], dtype=torch.float64),
          torch.tensor([[-0.25, 0.75, 1.0], [0.5, -0.5, 0.5]], dtype=torch.float64)]
    tall = shape[0] > shape[1]
    w = torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64))
    opt = AssocMomentum([w], lr=lr, momentum=alpha, mem_lr=eta, objective="l2")
    m = [[0.0] * 3 for _ in range(2)]  # memory in the short-side-first orientation
    expected = torch.zeros(2, 3, dtype=torch.float64)
    for g in gs:
        w.grad = g.t().clone() if tall else g.clone()
        opt.step()
        m = _delta_loops(m, g.tolist(), alpha, eta)
        expected -= lr * torch.tensor(m, dtype=torch.float64)
    torch.testing.assert_close(w.detach(), expected.t() if tall else expected, rtol=0, atol=1e-14)


def test_feature_map_and_values_change_the_write() -> None:
    g = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    for kwargs, expected in [
        (dict(feature_map="normalize"), -g / 5.0),
        (dict(feature_map="poly", poly_coeffs=(1.0, 0.0, 0.5)), -(g + 0.5 * g**3)),
        (dict(values="rms"), -g / (g.abs() + 1e-8)),  # first step: bias-corrected EMA of g^2 is g^2
        (dict(feature_map=lambda x: 2 * x), -2 * g),
        (dict(objective="l2", mem_lr=0.01, value_scale=100.0), -g),  # first write is eta * c * K = K
    ]:
        w = torch.nn.Parameter(torch.zeros_like(g))
        opt = AssocMomentum([w], lr=1.0, momentum=0.9, **kwargs)
        w.grad = g.clone()
        opt.step()
        torch.testing.assert_close(w.detach(), expected)


def test_param_groups_get_their_own_options() -> None:
    a, b = _params(), _params()
    opt = AssocMomentum([{"params": a[:2], "objective": "l2", "mem_lr": 0.01}, {"params": a[2:]}], lr=0.05)
    ref = AssocMomentum([{"params": b[:2], "objective": "l2", "mem_lr": 0.01}], lr=0.05)
    sgd = torch.optim.SGD(b[2:], lr=0.05, momentum=0.9)
    for t in range(3):
        for p, q, g in zip(a, b, _grads(t)):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
        sgd.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-14)
