"""MultiFrequency: a group with every=k is stepped on calls k, 2k, ... with the accumulated gradient."""

from __future__ import annotations

import pytest
import torch

from hope.optim import MultiFrequency


@pytest.mark.parametrize("accumulate", ["mean", "sum"])
def test_group_steps_every_k_with_accumulated_gradient(accumulate: str) -> None:
    fast = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    slow = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    inner = torch.optim.SGD([{"params": [fast]}, {"params": [slow], "every": 3}], lr=0.1)
    opt = MultiFrequency(inner, accumulate=accumulate)
    gen = torch.Generator().manual_seed(0)
    expected_fast, expected_slow = torch.zeros(3, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)
    pending = []
    for call in range(1, 8):
        gf, gs = torch.randn(3, generator=gen).double(), torch.randn(2, 2, generator=gen).double()
        fast.grad, slow.grad = gf.clone(), gs.clone()
        opt.step()
        expected_fast -= 0.1 * gf
        pending.append(gs)
        if call % 3 == 0:
            total = torch.stack(pending).sum(0)
            expected_slow -= 0.1 * (total / 3 if accumulate == "mean" else total)
            pending = []
        torch.testing.assert_close(fast.detach(), expected_fast, rtol=0, atol=1e-14)
        torch.testing.assert_close(slow.detach(), expected_slow, rtol=0, atol=1e-14)
        torch.testing.assert_close(slow.grad, gs)  # the caller's gradient is left in place
    assert torch.count_nonzero(slow.detach()) > 0


def test_skipped_calls_leave_state_untouched_and_schedulers_work() -> None:
    w = torch.nn.Parameter(torch.ones(4))
    inner = torch.optim.AdamW([{"params": [w], "every": 2}], lr=0.1)
    opt = MultiFrequency(inner)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    w.grad = torch.ones(4)
    opt.step()
    sched.step()
    assert len(inner.state[w]) == 0 and torch.equal(w.detach(), torch.ones(4))
    opt.step()
    sched.step()
    assert int(inner.state[w]["step"]) == 1 and not torch.equal(w.detach(), torch.ones(4))
    assert inner.param_groups[0]["lr"] == pytest.approx(0.025)
    opt.zero_grad()
    assert w.grad is None


def test_missing_gradient_counts_as_zero() -> None:
    w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = MultiFrequency(torch.optim.SGD([{"params": [w], "every": 2}], lr=1.0))
    w.grad = torch.tensor([2.0, 4.0], dtype=torch.float64)
    opt.step()
    w.grad = None
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([-1.0, -2.0], dtype=torch.float64))


def test_bad_every_raises() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="every"):
            MultiFrequency(torch.optim.SGD([{"params": [w], "every": bad}], lr=1.0))
    with pytest.raises(ValueError, match="accumulate"):
        MultiFrequency(torch.optim.SGD([w], lr=1.0), accumulate="max")
    with pytest.raises(TypeError):
        MultiFrequency([w])  # type: ignore[arg-type]
