"""chunk vs naive for the DGD memory ops: outputs, end states and the gradients of every input."""

import weakref

import pytest
import torch

from hope.ops.dgd import MemoryState, dgd_memory_chunk, dgd_memory_naive, smt_kv_chunk, smt_kv_naive
from hope.ops.dgd.common import l2norm
from hope.ops.dgd.linear import unit_lower_inverse

B, H, D, HID = 2, 2, 6, 5


def make_inputs(T, dtype=torch.float32, n_mem=None, dgd=True):
    g = torch.Generator().manual_seed(T)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    lead = (H,) if n_mem is None else (n_mem, H)
    eta_max = 0.5 if dgd else 0.2  # plain GD with large steps diverges (DGD's eta' keeps it contractive)
    inputs = dict(
        k=l2norm(r(B, H, T, D)) if n_mem is None else r(B, H, T, D),
        v=r(B, H, T, D),
        eta=eta_max * torch.rand(B, H, T, generator=g, dtype=dtype),
        alpha=0.8 + 0.2 * torch.rand(B, H, T, generator=g, dtype=dtype),
        beta=0.5 * torch.rand(B, H, T, generator=g, dtype=dtype),
        w1=0.3 * r(*lead, D, HID),
        w2=0.5 * r(*lead, HID, D),
    )
    if n_mem is None:
        inputs["q"] = r(B, H, T, D)
    return {k: t.requires_grad_() for k, t in inputs.items()}


def run(op, inp, chunk, dgd, momentum, self_target=True, splits=(), act="silu", anchors=False, **flags):
    """Run ``op`` over the sequence, cut at ``splits`` with the state passed along; return a scalar
    that depends on every output and the final state (with ``anchors``, the final anchors too), plus the
    outputs. ``flags``: further keyword switches of the op (``damping``, ``unit_target``, ...)."""
    state = MemoryState.from_params(inp["w1"], inp["w2"], B, momentum)
    T = inp["k"].shape[-2]
    bounds = [0, *splits, T]
    outs = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        sl = lambda t, s=s, e=e: t[..., s:e, :] if t.dim() == 4 else t[..., s:e]  # noqa: E731
        kw = dict(chunk_size=chunk, dgd=dgd, momentum=momentum, act=act, **flags)
        if "q" in inp:
            o, state = op(sl(inp["k"]), sl(inp["v"]), sl(inp["q"]), sl(inp["eta"]), sl(inp["alpha"]),
                          sl(inp["beta"]), state, self_target=self_target, **kw)
            outs.append((o,))
        else:
            k, v, state = op(sl(inp["k"]), sl(inp["v"]), sl(inp["eta"]), sl(inp["alpha"]), sl(inp["beta"]),
                             state, **kw)
            outs.append((k, v))
    outs = [torch.cat(parts, dim=-2) for parts in zip(*outs)]
    final = [state.w1, state.w2] + ([state.v1, state.v2] if momentum else []) + ([state.a1, state.a2] if anchors
                                                                                   else [])
    g = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in outs + final)
    return loss, outs, state


def grads(loss, inp):
    return torch.autograd.grad(loss, list(inp.values()), allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize("T", [1, 7, 63, 130])
@pytest.mark.parametrize("chunk", [1, 5, 16, 40])  # 40: steps invert their systems by blocks (above 32 rows)
@pytest.mark.parametrize("dgd", [True, False])
@pytest.mark.parametrize("momentum", [True, False])
def test_dgd_memory_chunk_matches_naive(T, chunk, dgd, momentum):
    inp = make_inputs(T, dgd=dgd)
    loss_n, out_n, st_n = run(dgd_memory_naive, inp, chunk, dgd, momentum)
    loss_c, out_c, st_c = run(dgd_memory_chunk, inp, chunk, dgd, momentum)
    torch.testing.assert_close(out_c[0], out_n[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(st_c.w1, st_n.w1, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(st_c.w2, st_n.w2, rtol=1e-4, atol=1e-4)
    assert st_c.offset == st_n.offset == T % chunk
    for name, gc, gn in zip(inp, grads(loss_c, inp), grads(loss_n, inp)):
        torch.testing.assert_close(gc, gn, rtol=1e-3, atol=1e-3, msg=lambda m: f"grad of {name}: {m}")  # noqa: B023


@pytest.mark.parametrize("T", [1, 7, 63, 130])
@pytest.mark.parametrize("chunk", [4, 16, 40])
@pytest.mark.parametrize("dgd,momentum", [(True, True), (False, False), (True, False)])
def test_smt_kv_chunk_matches_naive(T, chunk, dgd, momentum):
    inp = make_inputs(T, n_mem=2, dgd=dgd)
    loss_n, out_n, st_n = run(smt_kv_naive, inp, chunk, dgd, momentum)
    loss_c, out_c, st_c = run(smt_kv_chunk, inp, chunk, dgd, momentum)
    for a, b in zip(out_c, out_n):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(st_c.w2, st_n.w2, rtol=1e-4, atol=1e-4)
    for name, gc, gn in zip(inp, grads(loss_c, inp), grads(loss_n, inp)):
        torch.testing.assert_close(gc, gn, rtol=1e-3, atol=1e-3, msg=lambda m: f"grad of {name}: {m}")  # noqa: B023


@pytest.mark.parametrize("op", [dgd_memory_chunk, dgd_memory_naive])
@pytest.mark.parametrize("splits", [(16,), (5,), (3, 4, 21), (1, 2, 3)])
def test_streaming_equals_one_call(op, splits):
    """Calls with the state passed along equal one call, whether or not splits fall on chunk boundaries."""
    inp = make_inputs(40)
    _, full, st_full = run(op, inp, 8, True, True)
    _, parts, st_parts = run(op, inp, 8, True, True, splits=splits)
    torch.testing.assert_close(parts[0], full[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(st_parts.w1, st_full.w1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(st_parts.a2, st_full.a2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op,self_target,act,splits", [
    ("memory", False, "silu", ()),  # plain Titans target (the key/value memories always self-generate theirs)
    *((op, True, act, splits) for op in ("memory", "kv")
      for act, splits in (("gelu", ()), ("silu", (5, 21)), ("silu", (16, 24)))),
])
def test_chunk_gradients_match_naive_variants(op, self_target, act, splits):
    """The analytic backward of the whole-chunk loop against autograd through the naive loop, for the plain
    Titans target, the GELU memory and streamed calls (the loss also reads the final anchors)."""
    inp = make_inputs(40, n_mem=None if op == "memory" else 2)
    naive, chunk = (dgd_memory_naive, dgd_memory_chunk) if op == "memory" else (smt_kv_naive, smt_kv_chunk)
    kw = dict(splits=splits, act=act, anchors=True) | (dict(self_target=self_target) if op == "memory" else {})
    loss_n, out_n, _ = run(naive, inp, 8, True, True, **kw)
    loss_c, out_c, _ = run(chunk, inp, 8, True, True, **kw)
    for a, b in zip(out_c, out_n):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for name, gc, gn in zip(inp, grads(loss_c, inp), grads(loss_n, inp)):
        torch.testing.assert_close(gc, gn, rtol=1e-3, atol=1e-3, msg=lambda m: f"grad of {name}: {m}")  # noqa: B023


@pytest.mark.parametrize("dgd,momentum", [(True, True), (False, False)])
def test_chunk_gradcheck_float64(dgd, momentum):
    """Float64 gradcheck of the chunk ops themselves: checks the hand-written VJPs of the chunk loop
    (hope.ops.dgd.vjp) against finite differences, with a partial last chunk."""
    for n_mem, op in ((None, dgd_memory_chunk), (2, smt_kv_chunk)):
        inp = make_inputs(7, dtype=torch.float64, n_mem=n_mem, dgd=dgd)
        names = list(inp)

        def f(*args, op=op, names=names):
            return run(op, dict(zip(names, args)), 3, dgd, momentum, anchors=True)[0]

        assert torch.autograd.gradcheck(f, tuple(inp.values()), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("n", [33, 45, 64, 100])
def test_blocked_inverse_is_the_inverse(n):
    """Above 32 rows the steps' ``(I + L)^-1`` is built by blocks; it equals the triangular solve's."""
    lower = (0.3 * torch.randn(3, n, n, dtype=torch.float64)).tril(-1)
    inv = unit_lower_inverse(lower)
    eye = torch.eye(n, dtype=torch.float64)
    torch.testing.assert_close((eye + lower) @ inv, eye.expand(3, n, n), rtol=0, atol=1e-12)
    torch.testing.assert_close(inv, unit_lower_inverse(lower, blocked=False), rtol=0, atol=1e-12)
    assert torch.equal(inv.triu(1), torch.zeros_like(inv)) and torch.equal(inv.diagonal(dim1=-2, dim2=-1),
                                                                         torch.ones(3, n, dtype=torch.float64))


def test_chunk_loop_frees_its_graph():
    """The chunk loops keep their intermediates on the autograd node: once the outputs are gone, so is the
    node (an output also kept on the node would make a reference cycle and leak every step)."""
    inp = make_inputs(40)
    loss, out, state = run(dgd_memory_chunk, inp, 8, True, True, anchors=True)
    loss.backward()
    refs = [weakref.ref(t) for t in (out[0], state.w1, state.a1, state.v1)]
    del loss, out, state
    assert all(r() is None for r in refs)


def test_titans_target_and_dgd_flags_change_results():
    """The flags are real switches: each changes the output."""
    inp = make_inputs(20)
    base = run(dgd_memory_chunk, inp, 4, True, True)[1][0]
    for kw in (dict(dgd=False, momentum=True), dict(dgd=True, momentum=False)):
        other = run(dgd_memory_chunk, inp, 4, kw["dgd"], kw["momentum"])[1][0]
        assert not torch.allclose(base, other, atol=1e-4)
    other = run(dgd_memory_chunk, inp, 4, True, True, self_target=False)[1][0]
    assert not torch.allclose(base, other, atol=1e-4)


def test_chunk_size_one_is_the_sequential_rule():
    """With C=1 the anchor is the current state, and each layer takes the exact proximal step towards its local
    target (docs/semantics.md): W1 towards ``L2norm(M(v)) - k`` on input ``h = s(W2 k)``; W2 towards the damped
    hidden target ``z - delta2 / (1 + ||W1 diag(s'(z))||_F^2)`` on input ``k``. Written out here by hand."""
    silu, sig = torch.nn.functional.silu, torch.sigmoid
    inp = make_inputs(3)
    _, out, st = run(dgd_memory_chunk, inp, 1, True, False)
    w1, w2 = inp["w1"].detach().expand(B, H, D, HID), inp["w2"].detach().expand(B, H, HID, D)
    k, v, q = (inp[n].detach() for n in "kvq")
    eta, alpha = inp["eta"].detach(), inp["alpha"].detach()
    col = lambda t: t[..., None]  # noqa: E731
    for t in range(3):
        kt, vt, e, a = k[..., t, :], v[..., t, :], eta[..., t, None, None], alpha[..., t, None, None]
        mv = vt + (w1 @ col(silu((w2 @ col(vt))[..., 0])))[..., 0]
        target = mv / mv.norm(dim=-1, keepdim=True)
        z = (w2 @ col(kt))[..., 0]
        h = silu(z)
        r = kt + (w1 @ col(h))[..., 0] - target
        slope = sig(z) * (1 + z * (1 - sig(z)))
        delta2 = (w1.mT @ col(r))[..., 0] * slope
        kappa = ((w1 * slope[..., None, :]) ** 2).sum((-1, -2))[..., None]
        y1, y2 = target - kt, z - delta2 / (1 + kappa)
        e1 = e / (1 + e * (h * h).sum(-1)[..., None, None])
        e2 = e / (1 + e * (kt * kt).sum(-1)[..., None, None])
        w1, w2 = (a * w1 - e1 * col((w1 @ col(h))[..., 0] - y1) * h[..., None, :],
                  a * w2 - e2 * col((w2 @ col(kt))[..., 0] - y2) * kt[..., None, :])
        qt = q[..., t, :]
        o = qt + (w1 @ col(silu((w2 @ col(qt))[..., 0])))[..., 0]
        torch.testing.assert_close(out[0][..., t, :], o, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(st.w1, w1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(st.w2, w2, rtol=1e-5, atol=1e-5)


def test_dgd_is_the_gated_delta_rule_on_a_repeated_token():
    """Within a chunk DGD measures each token's error at the current state, so a repeated token converges to
    its target (the delta rule) instead of applying the anchored gradient C times: long constant inputs stay
    finite and the memory's output at the key approaches the (self-generated) target."""
    T = 96
    inp = make_inputs(T)
    k0, v0 = inp["k"].detach()[..., :1, :], inp["v"].detach()[..., :1, :]
    inp["k"], inp["v"] = k0.expand(B, H, T, D).clone(), v0.expand(B, H, T, D).clone()
    inp["q"] = inp["k"].clone()
    inp["alpha"] = torch.ones(B, H, T)
    _, out, st = run(dgd_memory_chunk, inp, 32, True, False, self_target=False)
    err = (out[0][..., -1, :] - v0[..., 0, :]).norm(dim=-1)
    start = (out[0][..., 0, :] - v0[..., 0, :]).norm(dim=-1)
    assert torch.isfinite(out[0]).all()
    assert (err < 0.35 * start).all(), (err, start)


def test_naive_gradcheck_float64():
    inp = make_inputs(5, dtype=torch.float64)
    names = list(inp)

    def f(*args):
        return run(dgd_memory_naive, dict(zip(names, args)), 2, True, True)[0]

    assert torch.autograd.gradcheck(f, tuple(inp.values()), eps=1e-6, atol=1e-5)
    inp = make_inputs(4, dtype=torch.float64, n_mem=2)
    names = list(inp)

    def g(*args):
        return run(smt_kv_naive, dict(zip(names, args)), 3, True, True)[0]

    assert torch.autograd.gradcheck(g, tuple(inp.values()), eps=1e-6, atol=1e-5)


def test_bad_chunk_size_is_a_clear_error():
    inp = make_inputs(3)
    with pytest.raises(ValueError, match="chunk_size"):
        run(dgd_memory_chunk, inp, 0, True, True)


class CountingStep:
    """A step that delegates to the PyTorch one and counts its calls: what a backend plugs into the driver."""

    name, steps_sum, uses_gates = "counting", True, True

    def __init__(self):
        from hope.ops.dgd.step import TORCH_STEP

        self.inner, self.calls = TORCH_STEP, {"forward": 0, "backward": 0}

    def forward(self, *args):
        self.calls["forward"] += 1
        return self.inner.forward(*args)

    def steps(self, ctx):
        return self.inner.steps(ctx)

    def backward(self, *args):
        self.calls["backward"] += 1
        return self.inner.backward(*args)


@pytest.mark.parametrize("op", ["memory", "kv"])
def test_one_driver_with_a_pluggable_step(op):
    """Both ops run every chunk, including the rest of a chunk an earlier call left open, through the one driver
    and its step: two steps (one per layer) per chunk in each direction, and the results of the default step."""
    inp = make_inputs(21, n_mem=None if op == "memory" else 2)
    chunk_op = dgd_memory_chunk if op == "memory" else smt_kv_chunk
    step = CountingStep()
    plugged = lambda *a, **kw: chunk_op(*a, step=step, **kw)  # noqa: E731
    loss_p, out_p, _ = run(plugged, inp, 8, True, True, splits=(5,))
    loss_d, out_d, _ = run(chunk_op, inp, 8, True, True, splits=(5,))
    for a, b in zip(out_p, out_d):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    chunks = 1 + 3  # tokens 0-4 (one chunk), then 5-7 (the rest of it, continued), 8-15 and 16-20
    assert step.calls["forward"] == 2 * chunks
    for gp, gd in zip(grads(loss_p, inp), grads(loss_d, inp)):
        torch.testing.assert_close(gp, gd, rtol=0, atol=0)
    assert step.calls["backward"] == 2 * chunks


@pytest.mark.parametrize("op", ["memory", "kv"])
def test_compiled_chunk_loop_matches_eager(monkeypatch, op):
    """HOPE_COMPILE_CHUNKS=1 (torch.compile of the driver's per-chunk forward and backward) gives the eager
    outputs, end states and gradients, a continued open chunk included."""
    inp = make_inputs(45, n_mem=None if op == "memory" else 2)  # 5 chunks after the split: guards skipped
    chunk_op = dgd_memory_chunk if op == "memory" else smt_kv_chunk
    loss_e, out_e, st_e = run(chunk_op, inp, 8, True, True, splits=(5,))
    monkeypatch.setenv("HOPE_COMPILE_CHUNKS", "1")
    loss_c, out_c, st_c = run(chunk_op, inp, 8, True, True, splits=(5,))
    for a, b in zip(out_c + [st_c.w1, st_c.w2, st_c.v1, st_c.v2], out_e + [st_e.w1, st_e.w2, st_e.v1, st_e.v2]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for name, gc, ge in zip(inp, grads(loss_c, inp), grads(loss_e, inp)):
        torch.testing.assert_close(gc, ge, rtol=1e-4, atol=1e-5, msg=lambda m: f"grad of {name}: {m}")  # noqa: B023


def test_compiled_chunk_loops_keep_more_graphs_than_dynamo_s_default(monkeypatch):
    """A chunk function compiles one graph per shape and flag combination; past Dynamo's ``recompile_limit`` it
    would run eagerly and a loop that skips guards would fail (at the default of 8, ``benchmarks/chunk_cost.py
    --chunk-sizes``'s twelve ops in one process got there). ``chunk_fn`` raises the limit."""
    inp = make_inputs(40)
    with torch._dynamo.config.patch(recompile_limit=1):  # (pytest's monkeypatch cannot undo a config attribute)
        for chunk in (8, 5):  # 5, then 8 chunks (the calls after the second skip guards); new shapes for each graph
            monkeypatch.setenv("HOPE_COMPILE_CHUNKS", "1")
            loss_c, out_c, _ = run(dgd_memory_chunk, inp, chunk, True, True)
            monkeypatch.setenv("HOPE_COMPILE_CHUNKS", "0")
            loss_e, out_e, _ = run(dgd_memory_chunk, inp, chunk, True, True)
            torch.testing.assert_close(out_c[0], out_e[0], rtol=1e-5, atol=1e-6)
            for name, gc, ge in zip(inp, grads(loss_c, inp), grads(loss_e, inp)):
                torch.testing.assert_close(gc, ge, rtol=1e-4, atol=1e-5, msg=lambda m: f"grad of {name}: {m}")  # noqa: B023
