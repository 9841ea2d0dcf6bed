"""M3 (Algorithm 1): fast loop alone, fast + slow loops, the literal sum form, the AdamW fallback."""

from __future__ import annotations

import pytest
import torch
from optim_reference import m3_plain, ns_plain

from hope.optim import M3

B1, B2, B3, LR, EPS = 0.9, 0.99, 0.8, 1e-3, 1e-8


def _stream(shape: tuple[int, ...], n: int, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    w0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    return w0, [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(n)]


def _run_m3(w0: torch.Tensor, grads: list[torch.Tensor], **kwargs) -> torch.Tensor:
    w = torch.nn.Parameter(w0.clone())
    literal = {"precondition": "after", "scale": "none"}  # Algorithm 1 as printed (the reference's form)
    opt = M3([w], **{"lr": LR, "betas": (B1, B2, B3), "eps": EPS, **literal, **kwargs})
    for g in grads:
        w.grad = g.clone()
        opt.step()
    return w.detach()


@pytest.mark.parametrize("off", [dict(slow_every=None), dict(alpha=0.0, slow_every=3)])
def test_slow_branch_off_is_the_fast_loop(off: dict) -> None:
    w0, grads = _stream((4, 6), 7)
    expected = m3_plain(w0, grads, LR, B1, B2, B3, alpha=0.0, f=None, eps=EPS)
    torch.testing.assert_close(_run_m3(w0, grads, **off), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(4, 6), (6, 4)])
def test_fast_and_slow_loops_match_algorithm_1(shape: tuple[int, int]) -> None:
    w0, grads = _stream(shape, 8, seed=1)
    expected = m3_plain(w0, grads, LR, B1, B2, B3, alpha=0.5, f=3, eps=EPS)
    got = _run_m3(w0, grads, alpha=0.5, slow_every=3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    fast_only = m3_plain(w0, grads, LR, B1, B2, B3, alpha=0.0, f=None, eps=EPS)
    assert (got - fast_only).abs().max() > 1e-6  # the slow branch contributes after step 3


def test_literal_sum_accumulation() -> None:
    w0, grads = _stream((3, 5), 5, seed=2)
    w, m1, v, m2, o2, chunk = w0.clone(), 0 * w0, 0 * w0, 0 * w0, 0 * w0, 0 * w0
    for t, g in enumerate(grads, start=1):
        m1, v, chunk = m1 + B1 * g, v + B2 * g * g, chunk + g
        w = w - LR * (ns_plain(m1) + 0.5 * o2) / (v.sqrt() + EPS)
        if t % 2 == 0:
            m2, chunk = m2 + B3 * chunk, 0 * chunk
            o2 = ns_plain(m2)
    got = _run_m3(w0, grads, alpha=0.5, slow_every=2, accumulation="sum")
    torch.testing.assert_close(got, w, rtol=0, atol=1e-12)


def test_default_is_scale_invariant() -> None:
    """The default (precondition="before") ignores the gradient's scale; the printed form does not."""
    w0, grads = _stream((4, 6), 4, seed=3)

    def run(grad_scale: float, **kw) -> torch.Tensor:
        w = torch.nn.Parameter(w0.clone())
        opt = M3([w], lr=LR, slow_every=2, eps=0.0, **kw)
        for g in grads:
            w.grad = grad_scale * g
            opt.step()
        return w.detach()

    torch.testing.assert_close(run(1.0), run(1e-3), rtol=0, atol=1e-10)
    after = run(1.0, precondition="after", scale="none") - w0
    after_small = run(1e-3, precondition="after", scale="none") - w0
    assert after_small.abs().max() > 100 * after.abs().max()  # the printed form's step grows like 1/|g|


def test_vectors_use_adamw() -> None:
    b0 = torch.randn(5, dtype=torch.float64)
    b, b2 = torch.nn.Parameter(b0.clone()), torch.nn.Parameter(b0.clone())
    opt = M3([b], lr=1e-2)
    ref = torch.optim.AdamW([b2], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0, foreach=False)
    for _ in range(3):
        g = torch.randn(5, dtype=torch.float64)
        b.grad, b2.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    torch.testing.assert_close(b.detach(), b2.detach(), rtol=0, atol=1e-13)
