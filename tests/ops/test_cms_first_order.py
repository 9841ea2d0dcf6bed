"""The first-order CMS option (``cms_first_order``): same forward, gradients of ``theta - eta * sg(sum grad)``."""

import functools

import pytest
import torch

from hope import HopeConfig, HopeLM
from hope.ops.cms import cms_level_chunk, cms_level_naive, swiglu
from hope.ops.common import l2norm
from tests.ops.test_cms_ops import B, make_inputs, run

NAMES = ("x", "w_key", "w_value", "eta", "w_gate", "w_up", "w_down")


def first_order(op):
    return functools.partial(op, first_order=True)


def reference(inp, chunk):
    """Hand-written first-order level: each full chunk's inner gradient comes from autograd at the chunk-start
    weights, is detached, and the weights step ``theta - eta * d`` (the partial last chunk takes no step)."""
    x, eta = inp["x"], inp["eta"]
    keys, values = (l2norm(x @ inp[w].T).detach() for w in ("w_key", "w_value"))
    theta = [inp[n].expand(B, *inp[n].shape) for n in ("w_gate", "w_up", "w_down")]
    outs = []
    for s in range(0, x.shape[1], chunk):
        e = min(x.shape[1], s + chunk)
        outs.append(swiglu(*theta, x[:, s:e]))
        if e - s < chunk:
            break
        leaves = [t.detach().requires_grad_() for t in theta]
        inner = 0.5 * ((swiglu(*leaves, keys[:, s:e]) - values[:, s:e]) ** 2).sum()
        d = torch.autograd.grad(inner, leaves)
        theta = [t - eta * g for t, g in zip(theta, d)]
    y = torch.cat(outs, dim=1)
    g = torch.Generator().manual_seed(1)  # the loss of tests.ops.test_cms_ops.run
    return sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in [y, *theta]), y


def grads(loss, inp):
    return torch.autograd.grad(loss, [inp[n] for n in NAMES], allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize("op", [cms_level_naive, cms_level_chunk])
@pytest.mark.parametrize("T,chunk", [(7, 3), (63, 5), (130, 16), (9, 1)])
def test_first_order_forward_is_the_exact_forward(op, T, chunk):
    inp = make_inputs(T)
    _, y, st = run(op, inp, chunk)
    _, y1, st1 = run(first_order(op), inp, chunk)
    assert torch.equal(y1, y)
    assert torch.equal(st1.w_in, st.w_in) and torch.equal(st1.w_out, st.w_out)


@pytest.mark.parametrize("op", [cms_level_naive, cms_level_chunk])
@pytest.mark.parametrize("T,chunk", [(7, 3), (63, 5), (130, 16), (9, 1)])
def test_first_order_gradients_match_the_detached_reference(op, T, chunk):
    inp = make_inputs(T)
    loss_ref, y_ref = reference(inp, chunk)
    loss, y, _ = run(first_order(op), inp, chunk)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    g = grads(loss, inp)
    for name, a, b in zip(NAMES, g, grads(loss_ref, inp)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"grad of {name}: {m}")  # noqa: B023
    assert torch.count_nonzero(g[1]) == 0  # the keys enter only the (constant) inner gradient


def test_first_order_streaming_equals_one_call():
    """Partial-chunk sums carried between calls are constants too: any split gives the one-call gradients."""
    inp = make_inputs(30)
    loss, y, _ = run(first_order(cms_level_chunk), inp, 8)
    loss_s, y_s, _ = run(first_order(cms_level_chunk), inp, 8, splits=(3, 11, 17))
    torch.testing.assert_close(y_s, y, rtol=1e-5, atol=1e-6)
    for name, a, b in zip(NAMES, grads(loss_s, inp), grads(loss, inp)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"grad of {name}: {m}")  # noqa: B023


def test_first_order_differs_from_the_exact_gradient():
    """The flag changes the gradients (the exact default meta-learns the key projection; first order does not)."""
    inp = make_inputs(40)
    g_exact = grads(run(cms_level_chunk, inp, 8)[0], inp)
    g_first = grads(run(first_order(cms_level_chunk), inp, 8)[0], inp)
    assert torch.count_nonzero(g_exact[1]) > 0
    assert not torch.allclose(g_exact[4], g_first[4], rtol=1e-3, atol=1e-5)  # theta_0 (w_gate) differs


def test_config_flag_reaches_every_in_context_level():
    torch.manual_seed(0)
    cfg = HopeConfig.from_name("tiny", n_layers=1, backend="chunk")
    exact, first = HopeLM(cfg), HopeLM(HopeConfig.from_name("tiny", n_layers=1, backend="chunk",
                                                            cms_first_order=True))
    first.load_state_dict(exact.state_dict())
    levels = [lvl for lvl in first.blocks[0].cms.levels if lvl.chunk_size is not None]
    assert levels and all(lvl.first_order for lvl in levels)
    ids = torch.randint(0, 256, (2, 140))  # both levels (C = 32, 128) take a step
    out, out1 = exact(ids, labels=ids), first(ids, labels=ids)
    assert torch.equal(out1.logits, out.logits)
    out1.loss.backward()
    assert all(lvl.w_key.grad is None and lvl.eta.grad is not None for lvl in levels)
