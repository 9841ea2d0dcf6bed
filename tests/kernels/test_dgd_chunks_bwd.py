"""The one-launch Triton backward of the main memory (``hope/kernels/dgd/chunks_bwd.py``, the step's
``chunks_backward`` hook) vs the PyTorch chunk backend and vs the driver's recompute loop (the Triton step without
the hook): outputs, end states and the gradient of every input (tokens, eta/alpha/beta, initial weights and
velocities), fp32, odd shapes (``d``, ``h`` and the chunk not powers of two, a partial last chunk), every flag the
kernel supports, streaming calls that continue an open chunk; calls it declines (the key/value memories, a kernel
that does not fit) still match, and the hook is what runs."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from hope.kernels.dgd import op  # noqa: E402
from hope.ops.dgd.chunk import dgd_memory_chunk, smt_kv_chunk  # noqa: E402
from tests.kernels.test_dgd_kernels import _close, _compare, _gates, _state, _state_outputs  # noqa: E402

B, H = 1, 2
NAMES = ("k", "v", "q")


def _inputs(T, d, h, momentum, seed, dgd=True, anchors=False):
    gen = torch.Generator().manual_seed(seed)
    leaves, st = _state((), B, H, d, h, momentum, gen, anchors=anchors)
    toks = [torch.randn(B, H, T, d, generator=gen).requires_grad_() for _ in NAMES]
    eta, alpha, beta = _gates((B, H), T, gen)
    if not dgd:  # plain GD with large steps diverges (DGD's eta' keeps it contractive)
        eta = 0.2 * eta
    leaves.update(dict(zip(NAMES, toks)), eta=eta.requires_grad_(), alpha=alpha.requires_grad_(),
                  beta=beta.requires_grad_())
    return leaves, st, gen


def _run(fn, leaves, st, chunk, splits=(), **kw):
    """``fn`` over the tokens cut at ``splits`` (state passed along): the outputs and final state, as one list."""
    T = leaves["eta"].shape[-1]
    bounds, outs = [0, *splits, T], []
    for s, e in zip(bounds[:-1], bounds[1:]):
        o, st = fn(*(leaves[n][..., s:e, :] for n in NAMES), *(leaves[n][..., s:e] for n in ("eta", "alpha", "beta")),
                   st, chunk_size=chunk, **kw)
        outs.append(o)
    return [torch.cat(outs, -2), *_state_outputs(st)]


@pytest.fixture
def hook_calls(monkeypatch):
    """Records, per call of the hook, its ``derive`` and ``cont`` flags and whether it ran (returned a result)."""
    calls = []

    def recording(*args):
        r = op.chunks_backward(*args)
        calls.append((args[1], args[2], r is not None))
        return r

    monkeypatch.setattr(op.TRITON_STEP, "chunks_backward", recording)
    return calls


def _grads(outs, leaves, cots):
    return torch.autograd.grad(outs, list(leaves.values()), cots, allow_unused=True)


def _check(T, d, h, chunk, seed, hook_calls, splits=(), offset=0, **flags):
    """The fused backward vs the chunk backend (outputs and all gradients) and vs the recompute loop; ``offset``:
    the state is resumed that far into a chunk, with anchors of its own."""
    leaves, st, gen = _inputs(T, d, h, flags.get("momentum", True), seed, flags.get("dgd", True), offset > 0)
    st.offset = offset
    ref = _run(dgd_memory_chunk, leaves, st, chunk, splits, **flags)
    ker = _run(op.dgd_memory, leaves, st, chunk, splits, **flags)
    rec = _run(op.dgd_memory_chunk, leaves, st, chunk, splits, step=op.TRITON_RECOMPUTE_STEP, **flags)
    for i, (a, b) in enumerate(zip(ker, ref)):
        _close(f"output {i}", a, b)
    cots = [torch.randn(o.shape, generator=gen) for o in ref]
    g_ref, g_ker, g_rec = (_grads(o, leaves, cots) for o in (ref, ker, rec))
    for name, a, b, c in zip(leaves, g_ker, g_ref, g_rec):
        _close(f"grad {name} vs chunk", a, b)
        _close(f"grad {name} vs recompute", a, c)
    assert any(ran for *_, ran in hook_calls), "the fused backward never ran"


MAIN = [  # (T, d, h, chunk, flags): d, h, chunk not powers of two; T not a multiple of the chunk
    (17, 5, 7, 6, {}),
    (13, 6, 5, 6, dict(momentum=False)),
    (17, 5, 6, 6, dict(dgd=False)),
    (17, 6, 7, 6, dict(self_target=False)),
    (13, 5, 7, 6, dict(damping=False, unit_target=False)),
    (17, 6, 6, 7, dict(unit_target=False)),
    (17, 5, 7, 6, dict(act="gelu", damping=False)),
    (13, 5, 7, 6, dict(act="gelu_tanh", dgd=False, momentum=False, self_target=False)),
    (13, 7, 5, 6, dict(act="gelu_tanh")),
    (5, 5, 7, 6, {}),  # one chunk, shorter than the chunk size
]


@pytest.mark.parametrize("T,d,h,chunk,flags", MAIN, ids=lambda c: str(c) if not isinstance(c, dict) else ",".join(
    f"{k}={v}" for k, v in c.items()) or "default")
def test_fused_backward(T, d, h, chunk, flags, hook_calls):
    _check(T, d, h, chunk, T * 10 + d, hook_calls, **flags)
    assert all(ran for *_, ran in hook_calls)


@pytest.mark.parametrize("flags", [{}, dict(momentum=False, act="gelu")], ids=["default", "no-momentum,gelu"])
def test_calls_continuing_a_chunk(flags, hook_calls):
    """Calls cut inside a chunk: tokens 0-3 (one short chunk), then 4-16, run as the rest of the open chunk
    (``cont``: its anchors are inputs and it does not open) and two full chunks; all three backwards fused."""
    _check(17, 5, 7, 6, 3, hook_calls, splits=(4,), **flags)
    assert hook_calls == [(False, False, True), (False, True, True), (False, False, True)]  # the last segment first


def test_state_resumed_inside_a_chunk_with_anchors(hook_calls):
    """A state resumed 3 tokens into a chunk whose anchors differ from its weights: gradients reach the anchors."""
    _check(13, 6, 5, 6, 5, hook_calls, offset=3)
    assert hook_calls == [(False, False, True), (False, True, True)]


def test_declined_key_value_memories_still_match(hook_calls):
    """``smt_kv`` (the driver's ``derive``) has no fused backward: the hook declines and the loop runs."""
    gen = torch.Generator().manual_seed(7)
    leaves, st = _state((2,), B, H, 5, 7, True, gen)
    leaves.update({n: torch.randn(B, H, 13, 5, generator=gen).requires_grad_() for n in ("k_in", "v_in")})
    leaves.update(zip(("eta", "alpha", "beta"), (g.requires_grad_() for g in _gates((B, H), 13, gen))))

    def run(fn):
        k, v, st_end = fn(leaves["k_in"], leaves["v_in"], leaves["eta"], leaves["alpha"], leaves["beta"], st,
                          chunk_size=6)
        return [k, v, *_state_outputs(st_end)]

    _compare("smt_kv", run(smt_kv_chunk), run(op.smt_kv), leaves, gen)
    assert hook_calls == [(True, False, False)]


def test_fused_backward_replaces_the_loop(monkeypatch, hook_calls):
    """With the hook, no per-chunk backward runs (the loop's step backward and recompute raise)."""
    def fail(*args, **kwargs):
        raise AssertionError("the per-chunk backward ran")

    monkeypatch.setattr(op.TRITON_STEP, "backward", fail)
    monkeypatch.setattr(op, "linear_chunk_backward", fail)
    monkeypatch.setattr("hope.ops.dgd.chunk_loop._chunk_saved", fail)
    leaves, st, gen = _inputs(13, 5, 7, True, 1)
    outs = _run(op.dgd_memory, leaves, st, 6)
    _grads(outs, leaves, [torch.randn(o.shape, generator=gen) for o in outs])
    assert hook_calls == [(False, False, True)]


def test_too_large_for_the_device_runs_the_loop(monkeypatch, hook_calls):
    """A backward kernel that does not fit (Triton raises before the launch) declines with a warning: the
    driver's loop gives the same gradients."""
    from triton.runtime.errors import OutOfResources

    class TooLarge:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                raise OutOfResources(360448, 232448, "shared memory")
            return launch

    monkeypatch.setattr(op, "dgd_chunks_bwd_kernel", TooLarge())
    monkeypatch.setattr(op, "_DECLINED", set())
    leaves, st, gen = _inputs(13, 5, 7, True, 2)
    ref = _run(dgd_memory_chunk, leaves, st, 6)
    ker = _run(op.dgd_memory, leaves, st, 6)
    with pytest.warns(UserWarning, match="per-chunk backward loop"):
        _compare("declined", ref, ker, leaves, gen)
    assert hook_calls == [(False, False, False)] and len(op._DECLINED) == 1

