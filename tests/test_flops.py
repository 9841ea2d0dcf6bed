"""hope.flops: the analytic FLOP counts against torch's FlopCounterMode, and the saved-tensor byte counts."""

import pytest
import torch

from hope import HopeConfig, HopeLM
from hope.flops import (
    _counted_saved_bytes,
    count_flops,
    flops_per_token,
    memory_per_sequence,
    saved_bytes,
    total_flops_per_token,
)

TINY = ["tiny", "titans-tiny", "hope-attention-tiny", "transformer-tiny"]
B, T = 2, 200  # several chunks of every memory and level, and partial last chunks (C = 16, 32, 64, 128)


@pytest.mark.parametrize("name,overrides", [(n, {}) for n in TINY] + [("tiny", {"cms_first_order": True})])
def test_analytic_flops_match_the_flop_counter(name, overrides):
    cfg = HopeConfig.from_name(name, backend="chunk", **overrides)
    torch.manual_seed(0)
    model = HopeLM(cfg)
    ids = torch.randint(0, cfg.vocab_size, (B, T))
    fwd, _ = count_flops(lambda: model(ids, labels=ids))
    both, _ = count_flops(lambda: model(ids, labels=ids).loss.backward())
    analytic = total_flops_per_token(cfg, T)
    assert analytic.forward * B * T == pytest.approx(fwd, rel=0.10)
    assert analytic.total * B * T == pytest.approx(both, rel=0.10)


def test_first_order_cms_costs_less_and_only_in_the_backward():
    cfg = HopeConfig.from_name("tiny")
    exact = flops_per_token(cfg, 2048)["CMS in-context"]
    first = flops_per_token(HopeConfig.from_name("tiny", cms_first_order=True), 2048)["CMS in-context"]
    assert first.forward == exact.forward and first.backward < 0.5 * exact.backward


def test_counter_formula_for_the_solve():
    a = torch.eye(7).expand(3, 7, 7) + torch.randn(3, 7, 7).tril(-1)
    n, _ = count_flops(torch.linalg.solve_triangular, a, torch.randn(3, 7, 5), upper=False, unitriangular=True)
    assert n == 3 * 7 * 7 * 5


def test_saved_bytes_sees_autograd_and_function_contexts():
    class Keep(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.kept = [{"a": x * 2}]  # a tensor in a nested container on the context
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g

    x = torch.randn(10, 16, requires_grad=True)
    w = torch.nn.Parameter(torch.randn(16, 8))
    y = Keep.apply(x @ w).sin()  # mm keeps x (and w, excluded); sin keeps its input; Keep keeps 2 (x @ w)
    assert saved_bytes(y, exclude=[w]) == 4 * (10 * 16 + 2 * 10 * 8)


def test_saved_bytes_on_fake_tensors_equal_the_real_ones_and_extrapolate():
    cfg = HopeConfig.from_name("tiny", n_layers=1, backend="chunk")
    torch.manual_seed(0)
    model = HopeLM(cfg)
    x = torch.randn(1, 256, cfg.dim, requires_grad=True)
    y, _ = model.blocks[0](x)
    assert saved_bytes(y, [*model.parameters(), x]) == _counted_saved_bytes(cfg, 256)[0]
    mem = memory_per_sequence(cfg, 384)  # counted at 128 and 256 tokens, extrapolated
    assert mem["saved_per_layer"] == pytest.approx(_counted_saved_bytes(cfg, 384)[0], rel=1e-3)
    assert mem["saved_per_layer"] > mem["chunk_states_per_layer"] > 0

