"""chunk vs naive for the CMS level op: outputs, states and gradients; float64 gradcheck of naive."""

import weakref

import pytest
import torch

from hope.ops.cms import CMSLevelState, cms_level_chunk, cms_level_naive

B, D, F = 2, 6, 10


def make_inputs(T, dtype=torch.float32):
    g = torch.Generator().manual_seed(T)
    r = lambda *s, sc=1.0: (sc * torch.randn(*s, generator=g, dtype=dtype)).requires_grad_()  # noqa: E731
    eta = torch.tensor(0.01, dtype=dtype, requires_grad=True)
    return dict(x=r(B, T, D, sc=0.5), w_key=r(D, D, sc=0.5), w_value=r(D, D, sc=0.5), eta=eta,
                w_gate=r(F, D, sc=0.3), w_up=r(F, D, sc=0.3), w_down=r(D, F, sc=0.3))


def run(op, inp, chunk, splits=(), **flags):
    state = CMSLevelState.from_weights(inp["w_gate"], inp["w_up"], inp["w_down"])
    T = inp["x"].shape[1]
    bounds, outs = [0, *splits, T], []
    for s, e in zip(bounds[:-1], bounds[1:]):
        y, state = op(inp["x"][:, s:e], inp["w_key"], inp["w_value"], inp["eta"], state, chunk_size=chunk, **flags)
        outs.append(y)
    y = torch.cat(outs, dim=1)
    g = torch.Generator().manual_seed(1)
    final = [state.w_gate, state.w_up, state.w_down]
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in [y, *final])
    return loss, y, state


@pytest.mark.parametrize("T", [1, 7, 63, 130])
@pytest.mark.parametrize("chunk", [1, 5, 16])
def test_cms_chunk_matches_naive(T, chunk):
    inp = make_inputs(T)
    loss_n, y_n, st_n = run(cms_level_naive, inp, chunk)
    loss_c, y_c, st_c = run(cms_level_chunk, inp, chunk)
    torch.testing.assert_close(y_c, y_n, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(st_c.w_up, st_n.w_up, rtol=1e-4, atol=1e-5)
    assert st_c.offset == st_n.offset == T % chunk
    gn = torch.autograd.grad(loss_n, list(inp.values()), allow_unused=True, materialize_grads=True)
    gc = torch.autograd.grad(loss_c, list(inp.values()), allow_unused=True, materialize_grads=True)
    for name, a, b in zip(inp, gc, gn):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=lambda m: f"grad of {name}: {m}")  # noqa: B023


@pytest.mark.parametrize("T,chunk,splits", [(37, 8, ()), (30, 8, (3, 11)), (21, 16, ())])
@pytest.mark.parametrize("first_order", [False, True])
def test_raw_keys_values_chunk_matches_naive(T, chunk, splits, first_order):
    """``unit_kv=False`` (raw projections in the associative objective, the ablation of CMS item 1): chunk
    matches naive in outputs, end state and gradients, streamed or not, and differs from the unit default."""
    inp = make_inputs(T)
    kw = dict(first_order=first_order, unit_kv=False)
    loss_n, y_n, st_n = run(cms_level_naive, inp, chunk, splits, **kw)
    loss_c, y_c, st_c = run(cms_level_chunk, inp, chunk, splits, **kw)
    torch.testing.assert_close(y_c, y_n, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(st_c.w_down, st_n.w_down, rtol=1e-4, atol=1e-5)
    gn = torch.autograd.grad(loss_n, list(inp.values()), allow_unused=True, materialize_grads=True)
    gc = torch.autograd.grad(loss_c, list(inp.values()), allow_unused=True, materialize_grads=True)
    for name, a, b in zip(inp, gc, gn):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=lambda m: f"grad of {name}: {m}")  # noqa: B023
    _, y_unit, st_unit = run(cms_level_chunk, inp, chunk, splits, first_order=first_order)
    assert not torch.allclose(st_unit.w_down, st_c.w_down, atol=1e-5)


def test_raw_keys_values_step_matches_autograd():
    """With ``unit_kv=False`` a full chunk steps on the loss of the raw projections ``W_k x``, ``W_v x``."""
    inp = make_inputs(9)
    _, _, st = run(cms_level_chunk, inp, 9, unit_kv=False)
    params = [inp[n].detach().clone().requires_grad_() for n in ("w_gate", "w_up", "w_down")]
    x = inp["x"].detach()[0]
    keys, values = x @ inp["w_key"].detach().T, x @ inp["w_value"].detach().T
    out = (torch.nn.functional.silu(keys @ params[0].T) * (keys @ params[1].T)) @ params[2].T
    (0.5 * ((out - values) ** 2).sum()).backward()
    for p, w in zip(params, (st.w_gate, st.w_up, st.w_down)):
        torch.testing.assert_close(w[0], p.detach() - 0.01 * p.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("splits", [(8,), (3,), (1, 2, 11, 17)])
def test_cms_streaming_equals_one_call(splits):
    """Partial-chunk accumulation is carried in the state, so any split gives the one-call result."""
    inp = make_inputs(30)
    _, full, st_full = run(cms_level_chunk, inp, 8)
    _, parts, st_parts = run(cms_level_chunk, inp, 8, splits)
    torch.testing.assert_close(parts, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(st_parts.w_down, st_full.w_down, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(st_parts.g_in, st_full.g_in, rtol=1e-5, atol=1e-6)


def test_summed_gradient_step_matches_autograd():
    """After one full chunk each sequence's weights took ``theta - eta * sum_t grad`` (a sum, not a mean),
    with the gradient of the associative loss computed by autograd here."""
    inp = make_inputs(9)
    _, _, st = run(cms_level_chunk, inp, 9)
    for b in range(B):
        params = [inp[n].detach().clone().requires_grad_() for n in ("w_gate", "w_up", "w_down")]
        x = inp["x"].detach()[b]
        keys = torch.nn.functional.normalize(x @ inp["w_key"].detach().T, dim=-1, eps=0)
        values = torch.nn.functional.normalize(x @ inp["w_value"].detach().T, dim=-1, eps=0)
        out = (torch.nn.functional.silu(keys @ params[0].T) * (keys @ params[1].T)) @ params[2].T
        (0.5 * ((out - values) ** 2).sum()).backward()
        for p, w in zip(params, (st.w_gate, st.w_up, st.w_down)):
            torch.testing.assert_close(w[b], p.detach() - 0.01 * p.grad, rtol=1e-5, atol=1e-6)


def test_cms_naive_gradcheck_float64():
    inp = make_inputs(5, dtype=torch.float64)
    names = list(inp)
    assert torch.autograd.gradcheck(lambda *a: run(cms_level_naive, dict(zip(names, a)), 2)[0], tuple(inp.values()))


@pytest.mark.parametrize("splits", [(), (3,)])
def test_cms_chunk_gradcheck_float64(splits):
    """Float64 gradcheck of the chunk op: checks the hand-written backward of the whole-chunk loop
    (hope.ops.cms.chunk_loop, including its Hessian-vector terms) against finite differences."""
    inp = make_inputs(9, dtype=torch.float64)
    names = list(inp)
    assert torch.autograd.gradcheck(lambda *a: run(cms_level_chunk, dict(zip(names, a)), 2, splits)[0],
                                    tuple(inp.values()))


def test_cms_chunk_loop_frees_its_graph():
    inp = make_inputs(16)
    loss, y, state = run(cms_level_chunk, inp, 4)
    loss.backward()
    refs = [weakref.ref(t) for t in (y, state.w_in, state.w_out)]
    del loss, y, state
    assert all(r() is None for r in refs)


def test_bad_chunk_size_and_shape():
    inp = make_inputs(4)
    with pytest.raises(ValueError, match="chunk_size"):
        run(cms_level_chunk, inp, 0)
    state = CMSLevelState.from_weights(inp["w_gate"], inp["w_up"], inp["w_down"])
    with pytest.raises(ValueError, match="batch, time, dim"):
        cms_level_chunk(inp["x"][0], inp["w_key"], inp["w_value"], inp["eta"], state, chunk_size=2)


FORMS = [("gelu_tanh", False, True), ("silu", True, True), ("gelu", True, False)]  # (act, gated, bias)


def run_form(op, inp, form, chunk, splits=()):
    act, gated, bias = form
    biases = (inp["b_gate"] if gated else None, inp["b_up"], inp["b_down"]) if bias else (None, None, None)
    state = CMSLevelState.from_weights(inp["w_gate"] if gated else None, inp["w_up"], inp["w_down"], *biases,
                                       act=act)
    assert not state.is_swiglu
    T = inp["x"].shape[1]
    bounds, outs = [0, *splits, T], []
    for s, e in zip(bounds[:-1], bounds[1:]):
        y, state = op(inp["x"][:, s:e], inp["w_key"], inp["w_value"], inp["eta"], state, chunk_size=chunk)
        outs.append(y)
    y = torch.cat(outs, dim=1)
    g = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=g)).sum() for t in [y, state.w_in, state.w_out])
    return loss, y, state


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("T,chunk", [(7, 3), (33, 5)])
def test_other_mlp_forms_chunk_matches_naive(form, T, chunk):
    """Levels seeded from pretrained MLPs (GELU, ungated, static biases) take the segment path in chunk."""
    inp = make_inputs(T)
    g = torch.Generator().manual_seed(2)
    inp.update({k: (0.3 * torch.randn(n, generator=g)).requires_grad_() for k, n in
                (("b_gate", F), ("b_up", F), ("b_down", D))})
    loss_n, y_n, st_n = run_form(cms_level_naive, inp, form, chunk)
    loss_c, y_c, st_c = run_form(cms_level_chunk, inp, form, chunk, splits=(2,))
    torch.testing.assert_close(y_c, y_n, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(st_c.w_in, st_n.w_in, rtol=1e-4, atol=1e-5)
    assert st_c.act == form[0] and (st_c.b_in is None) == (not form[2])
    if form[2]:  # biases are static: never stepped in context
        torch.testing.assert_close(st_c.b_in, st_n.b_in, rtol=0, atol=0)
    gn = torch.autograd.grad(loss_n, list(inp.values()), allow_unused=True, materialize_grads=True)
    gc = torch.autograd.grad(loss_c, list(inp.values()), allow_unused=True, materialize_grads=True)
    for name, a, b in zip(inp, gc, gn):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=lambda m: f"grad of {name}: {m}")  # noqa: B023


@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh"])
def test_activation_derivatives_match_autograd(act):
    from hope.ops.common import activation, activation_grad, activation_grad2

    x = torch.linspace(-5, 5, 101, dtype=torch.float64, requires_grad=True)
    (d1,) = torch.autograd.grad(activation(x, act).sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x)
    torch.testing.assert_close(activation_grad(x, act), d1)
    torch.testing.assert_close(activation_grad2(x, act), d2)


@pytest.mark.slow
@pytest.mark.parametrize("first_order", [False, True])
def test_compiled_chunk_loop_matches_eager(monkeypatch, first_order):
    """HOPE_COMPILE_CHUNKS=1 (torch.compile of the per-chunk functions) gives the eager outputs and gradients."""
    import functools

    op = functools.partial(cms_level_chunk, first_order=first_order)
    inp = make_inputs(21)
    loss_e, y_e, st_e = run(op, inp, 5)
    monkeypatch.setenv("HOPE_COMPILE_CHUNKS", "1")
    loss_c, y_c, st_c = run(op, inp, 5)
    torch.testing.assert_close(y_c, y_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(st_c.w_in, st_e.w_in, rtol=1e-5, atol=1e-6)
    ge = torch.autograd.grad(loss_e, list(inp.values()), allow_unused=True, materialize_grads=True)
    gc = torch.autograd.grad(loss_c, list(inp.values()), allow_unused=True, materialize_grads=True)
    for name, a, b in zip(inp, gc, ge):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"grad of {name}: {m}")  # noqa: B023
