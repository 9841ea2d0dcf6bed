"""Newton-Schulz and Muon (dot momentum + Newton-Schulz output), with the AdamW fallback."""

from __future__ import annotations

import math

import pytest
import torch
from optim_reference import muon_plain, ns_plain

from hope.optim import AssocMomentum, Muon, newton_schulz, newton_schulz_many


def test_cubic_newton_schulz_converges_to_polar_factor() -> None:
    gen = torch.Generator().manual_seed(0)
    q1, _ = torch.linalg.qr(torch.randn(5, 5, generator=gen, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(8, 5, generator=gen, dtype=torch.float64))
    g = q1 @ torch.diag(torch.tensor([1.0, 0.8, 0.6, 0.5, 0.4], dtype=torch.float64)) @ q2.t()  # 5 x 8
    polar = q1 @ q2.t()
    torch.testing.assert_close(newton_schulz(g, steps=60, method="cubic"), polar, rtol=0, atol=1e-8)
    torch.testing.assert_close(newton_schulz(g.t(), steps=60, method="cubic"), polar.t(), rtol=0, atol=1e-8)


def test_quintic_singular_values_near_one() -> None:
    g = torch.randn(32, 48, generator=torch.Generator().manual_seed(1))
    s = torch.linalg.svdvals(newton_schulz(g, steps=5))
    assert s.min() > 0.5 and s.max() < 1.3, s
    torch.testing.assert_close(newton_schulz(g.double()), ns_plain(g.double()), rtol=0, atol=1e-12)


def test_batched_equals_one_by_one() -> None:
    gen = torch.Generator().manual_seed(2)
    mats = [torch.randn(s, generator=gen, dtype=torch.float64) for s in [(4, 6), (6, 4), (4, 6), (3, 3)]]
    for m, o in zip(mats, newton_schulz_many(mats)):
        torch.testing.assert_close(o, newton_schulz(m), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(4, 6), (9, 3)])
@pytest.mark.parametrize("scale", ["shape", "match_adamw"])
def test_muon_equals_plain_reference(shape: tuple[int, int], scale: str) -> None:
    gen = torch.Generator().manual_seed(3)
    w0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    grads = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(5)]
    r, c = shape
    factor = math.sqrt(max(1.0, r / c)) if scale == "shape" else 0.2 * math.sqrt(max(r, c))
    expected = muon_plain(w0, grads, lr=0.02, beta=0.95, scale=factor)
    w = torch.nn.Parameter(w0.clone())
    opt = Muon([w], lr=0.02, momentum=0.95, scale=scale)
    for g in grads:
        w.grad = g.clone()
        opt.step()
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-12)
    # AssocMomentum with the same memory and output is the same optimizer
    w2 = torch.nn.Parameter(w0.clone())
    opt2 = AssocMomentum([w2], lr=0.02, momentum=0.95, nesterov=True, output="newton_schulz", scale=scale)
    for g in grads:
        w2.grad = g.clone()
        opt2.step()
    torch.testing.assert_close(w2.detach(), expected, rtol=0, atol=1e-12)


def test_muon_groups_batch_same_shapes_and_flatten_conv() -> None:
    gen = torch.Generator().manual_seed(4)
    shapes = [(4, 6), (4, 6), (6, 4), (3, 2, 2)]
    w0 = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    grads = [[torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes] for _ in range(3)]
    ws = [torch.nn.Parameter(w.clone()) for w in w0]
    opt = Muon(ws, lr=0.01, scale="none")
    for gs in grads:
        for w, g in zip(ws, gs):
            w.grad = g.clone()
        opt.step()
    for i, w in enumerate(ws):
        flat = [gs[i].reshape(shapes[i][0], -1) for gs in grads]
        expected = muon_plain(w0[i].reshape(shapes[i][0], -1), flat, lr=0.01, beta=0.95, scale=1.0)
        torch.testing.assert_close(w.detach(), expected.reshape(shapes[i]), rtol=0, atol=1e-12)


def test_adamw_fallback_equals_torch_adamw() -> None:
    gen = torch.Generator().manual_seed(5)
    bias0 = torch.randn(7, generator=gen, dtype=torch.float64)
    emb0 = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    b, e = torch.nn.Parameter(bias0.clone()), torch.nn.Parameter(emb0.clone())
    b2, e2 = torch.nn.Parameter(bias0.clone()), torch.nn.Parameter(emb0.clone())
    opt = Muon([{"params": [b]}, {"params": [e], "adamw": True, "weight_decay": 0.1}], lr=1e-2)
    ref = torch.optim.AdamW([{"params": [b2], "weight_decay": 0.0}, {"params": [e2], "weight_decay": 0.1}],
                            lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    for _ in range(4):
        gb = torch.randn(7, generator=gen, dtype=torch.float64)
        ge = torch.randn(10, 4, generator=gen, dtype=torch.float64)
        b.grad, e.grad, b2.grad, e2.grad = gb.clone(), ge.clone(), gb.clone(), ge.clone()
        opt.step()
        ref.step()
    torch.testing.assert_close(b.detach(), b2.detach(), rtol=0, atol=1e-13)
    torch.testing.assert_close(e.detach(), e2.detach(), rtol=0, atol=1e-13)
