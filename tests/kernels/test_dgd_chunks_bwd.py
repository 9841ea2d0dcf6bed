"""The one-launch Triton backward (``hope/kernels/dgd/chunks_bwd.py``, the step's ``chunks_backward`` hook) of the
main memory (``dgd_chunks_bwd_kernel``) and of the key/value memories (``kv_chunks_bwd_kernel``, the driver's
``derive``) vs the PyTorch chunk backend and vs the driver's recompute loop (the Triton step without the hook):
outputs, end states and the gradient of every input (tokens, eta/alpha/beta, initial weights, velocities and
anchors), fp32, odd shapes (``d``, ``h`` and the chunk not powers of two, a partial last chunk), every flag the
kernels support, streaming calls that continue an open chunk; a kernel that does not fit declines and the loop
still matches, and the hook is what runs."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from hope.kernels.dgd import op  # noqa: E402
from hope.ops.dgd.chunk import dgd_memory_chunk, smt_kv_chunk  # noqa: E402
from tests.kernels.test_dgd_kernels import _close, _compare, _gates, _state, _state_outputs  # noqa: E402

B, H = 1, 2
NAMES = ("k", "v", "q")
KV_NAMES = ("k_in", "v_in")


def _inputs(T, d, h, momentum, seed, dgd=True, anchors=False, kv=False):
    gen = torch.Generator().manual_seed(seed)
    leaves, st = _state((2,) if kv else (), B, H, d, h, momentum, gen, anchors=anchors)
    names = KV_NAMES if kv else NAMES
    toks = [torch.randn(B, H, T, d, generator=gen).requires_grad_() for _ in names]
    eta, alpha, beta = _gates((B, H), T, gen)
    if not dgd:  # plain GD with large steps diverges (DGD's eta' keeps it contractive)
        eta = 0.2 * eta
    leaves.update(dict(zip(names, toks)), eta=eta.requires_grad_(), alpha=alpha.requires_grad_(),
                  beta=beta.requires_grad_())
    return leaves, st, gen


def _run(fn, leaves, st, chunk, splits=(), kv=False, **kw):
    """``fn`` over the tokens cut at ``splits`` (state passed along): the outputs (the read-out, or the keys and
    values) and the final state, as one list."""
    T = leaves["eta"].shape[-1]
    bounds, outs = [0, *splits, T], []
    for s, e in zip(bounds[:-1], bounds[1:]):
        *o, st = fn(*(leaves[n][..., s:e, :] for n in (KV_NAMES if kv else NAMES)),
                    *(leaves[n][..., s:e] for n in ("eta", "alpha", "beta")), st, chunk_size=chunk, **kw)
        outs.append(o)
    return [torch.cat(parts, -2) for parts in zip(*outs)] + _state_outputs(st)


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


def _check(T, d, h, chunk, seed, hook_calls, splits=(), offset=0, kv=False, **flags):
    """The fused backward vs the chunk backend (outputs and all gradients) and vs the recompute loop; ``offset``:
    the state is resumed that far into a chunk, with anchors of its own; ``kv``: the key/value memories."""
    leaves, st, gen = _inputs(T, d, h, flags.get("momentum", True), seed, flags.get("dgd", True), offset > 0, kv)
    st.offset = offset
    chunk_op, fused_op = (smt_kv_chunk, op.smt_kv) if kv else (dgd_memory_chunk, op.dgd_memory)
    ref = _run(chunk_op, leaves, st, chunk, splits, kv, **flags)
    ker = _run(fused_op, leaves, st, chunk, splits, kv, **flags)
    rec = _run(chunk_op, leaves, st, chunk, splits, kv, step=op.TRITON_RECOMPUTE_STEP, **flags)
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


KV = [  # the key/value memories (self_target is implied); P = B * H = 2 key/value pairs
    (17, 5, 7, 6, {}),
    (13, 6, 5, 6, dict(momentum=False)),
    (17, 5, 6, 7, dict(dgd=False, unit_target=False)),
    (13, 7, 5, 6, dict(damping=False, act="gelu")),
    (13, 5, 7, 6, dict(act="gelu_tanh", dgd=False, momentum=False)),
    (5, 6, 7, 6, dict(unit_target=False)),  # one chunk, shorter than the chunk size
]


@pytest.mark.parametrize("T,d,h,chunk,flags", KV, ids=lambda c: str(c) if not isinstance(c, dict) else ",".join(
    f"{k}={v}" for k, v in c.items()) or "default")
def test_fused_backward_key_value(T, d, h, chunk, flags, hook_calls):
    _check(T, d, h, chunk, T * 10 + d + 1, hook_calls, kv=True, **flags)
    assert hook_calls == [(True, False, True)]


@pytest.mark.parametrize("kv,flags", [(False, {}), (False, dict(momentum=False, act="gelu")), (True, {}),
                                      (True, dict(momentum=False, dgd=False))],
                         ids=["main", "main-no-momentum,gelu", "kv", "kv-no-momentum,no-dgd"])
def test_calls_continuing_a_chunk(kv, flags, hook_calls):
    """Calls cut inside a chunk: tokens 0-3 (one short chunk), then 4-16, run as the rest of the open chunk
    (``cont``: its anchors are inputs and it does not open) and two full chunks; all three backwards fused."""
    _check(17, 5, 7, 6, 3, hook_calls, splits=(4,), kv=kv, **flags)
    assert hook_calls == [(kv, False, True), (kv, True, True), (kv, False, True)]  # the last segment first


@pytest.mark.parametrize("kv", [False, True], ids=["main", "kv"])
def test_state_resumed_inside_a_chunk_with_anchors(kv, hook_calls):
    """A state resumed 3 tokens into a chunk whose anchors differ from its weights: gradients reach the anchors."""
    _check(13, 6, 5, 6, 5, hook_calls, offset=3, kv=kv)
    assert hook_calls == [(kv, False, True), (kv, True, True)]


@pytest.mark.parametrize("kv", [False, True], ids=["main", "kv"])
def test_fused_backward_replaces_the_loop(kv, monkeypatch, hook_calls):
    """With the hook, no per-chunk backward runs (the loop's step backward and recompute raise)."""
    def fail(*args, **kwargs):
        raise AssertionError("the per-chunk backward ran")

    monkeypatch.setattr(op.TRITON_STEP, "backward", fail)
    monkeypatch.setattr(op, "linear_chunk_backward", fail)
    monkeypatch.setattr("hope.ops.dgd.chunk_loop._chunk_saved", fail)
    leaves, st, gen = _inputs(13, 5, 7, True, 1, kv=kv)
    outs = _run(op.smt_kv if kv else op.dgd_memory, leaves, st, 6, kv=kv)
    _grads(outs, leaves, [torch.randn(o.shape, generator=gen) for o in outs])
    assert hook_calls == [(kv, False, True)]


@pytest.mark.parametrize("kv", [False, True], ids=["main", "kv"])
def test_too_large_for_the_device_runs_the_loop(kv, monkeypatch, hook_calls):
    """A backward kernel that does not fit (Triton raises before the launch) declines with a warning: the
    driver's loop gives the same gradients."""
    from triton.runtime.errors import OutOfResources

    class TooLarge:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                raise OutOfResources(360448, 232448, "shared memory")
            return launch

    monkeypatch.setattr(op, "kv_chunks_bwd_kernel" if kv else "dgd_chunks_bwd_kernel", TooLarge())
    monkeypatch.setattr(op, "_DECLINED", set())
    leaves, st, gen = _inputs(13, 5, 7, True, 2, kv=kv)
    ref = _run(smt_kv_chunk if kv else dgd_memory_chunk, leaves, st, 6, kv=kv)
    ker = _run(op.smt_kv if kv else op.dgd_memory, leaves, st, 6, kv=kv)
    with pytest.warns(UserWarning, match="per-chunk backward loop"):
        _compare("declined", ref, ker, leaves, gen)
    assert hook_calls == [(kv, False, False)] and len(op._DECLINED) == 1

