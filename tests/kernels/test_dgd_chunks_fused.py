"""The one-launch Triton forward over all chunks (``hope/kernels/dgd/chunks_fwd.py``, the driver's forward of
``op.dgd_memory`` / ``op.smt_kv``) with their backward (the one-launch backwards of ``test_dgd_chunks_bwd.py``)
vs the PyTorch chunk backend: outputs, end states and the gradient of every input, fp32, odd shapes (``d``, ``h``,
the chunk and a partial last chunk not powers of two), every flag, and streaming calls that continue an open chunk."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from hope.kernels.dgd import op  # noqa: E402
from hope.ops.dgd.chunk import dgd_memory_chunk, smt_kv_chunk  # noqa: E402
from tests.kernels.test_dgd_kernels import DEVICE, _compare, _gates, _state, _state_outputs  # noqa: E402

B, H, CHUNK = 2, 2, 8


def _inputs(stack, T, d, h, momentum, seed, anchors=False, dgd=True):
    gen = torch.Generator().manual_seed(seed)
    leaves, st = _state(stack, B, H, d, h, momentum, gen, anchors=anchors)
    n_tok = 2 if stack else 3
    toks = [torch.randn(B, H, T, d, generator=gen).to(DEVICE).requires_grad_() for _ in range(n_tok)]
    eta, alpha, beta = _gates((B, H), T, gen)
    if not dgd:  # plain GD with large steps diverges (DGD's eta' keeps it contractive)
        eta = 0.2 * eta
    eta, alpha, beta = (g.requires_grad_() for g in (eta, alpha, beta))
    names = ("k_in", "v_in") if stack else ("k", "v", "q")
    leaves.update(dict(zip(names, toks)), eta=eta, alpha=alpha, beta=beta)
    return leaves, st, gen


def _streamed(fn, leaves, names, st, splits, **kw):
    """``fn`` over the tokens cut at ``splits`` with the state passed along: the concatenated outputs and the
    final state."""
    T = leaves["eta"].shape[-1]
    bounds, outs = [0, *splits, T], []
    for s, e in zip(bounds[:-1], bounds[1:]):
        *o, st = fn(*(leaves[n][..., s:e, :] for n in names), *(leaves[n][..., s:e] for n in ("eta", "alpha", "beta")),
                    st, chunk_size=CHUNK, **kw)
        outs.append(o)
    return [torch.cat(parts, -2) for parts in zip(*outs)], st


def _check(kv, T, d, h, splits=(), anchors=False, seed=0, **flags):
    stack, names = ((2,), ("k_in", "v_in")) if kv else ((), ("k", "v", "q"))
    leaves, st, gen = _inputs(stack, T, d, h, flags.get("momentum", True), seed, anchors, flags.get("dgd", True))
    if anchors:  # a state resumed inside a chunk
        st.offset = 3
    ref, ker = (smt_kv_chunk, op.smt_kv) if kv else (dgd_memory_chunk, op.dgd_memory)
    o_ref, st_ref = _streamed(ref, leaves, names, st, splits, **flags)
    o_ker, st_ker = _streamed(ker, leaves, names, st, splits, **flags)
    assert st_ker.offset == st_ref.offset
    _compare("fused", [*o_ref, *_state_outputs(st_ref)], [*o_ker, *_state_outputs(st_ker)], leaves, gen)


MAIN = [  # (T, d, h, flags)
    (21, 5, 7, {}),
    (7, 6, 6, dict(momentum=False)),
    (21, 5, 6, dict(dgd=False)),
    (21, 6, 7, dict(self_target=False)),
    (1, 5, 7, dict(damping=False, unit_target=False)),
    (21, 6, 6, dict(unit_target=False)),
    (21, 5, 7, dict(act="gelu", damping=False)),
    (7, 5, 7, dict(act="gelu_tanh", dgd=False, momentum=False, self_target=False)),
]


@pytest.mark.parametrize("T,d,h,flags", MAIN, ids=lambda c: str(c) if not isinstance(c, dict) else ",".join(
    f"{k}={v}" for k, v in c.items()) or "default")
def test_dgd_memory_fused(T, d, h, flags):
    _check(False, T, d, h, seed=T * 10 + d, **flags)


KV = [
    (21, 5, 7, {}),
    (7, 6, 6, dict(dgd=False, unit_target=False)),
    (21, 5, 6, dict(momentum=False, damping=False, act="gelu")),
    (1, 6, 7, {}),
]


@pytest.mark.parametrize("T,d,h,flags", KV, ids=lambda c: str(c) if not isinstance(c, dict) else ",".join(
    f"{k}={v}" for k, v in c.items()) or "default")
def test_smt_kv_fused(T, d, h, flags):
    _check(True, T, d, h, seed=T * 10 + d + 1, **flags)


@pytest.mark.parametrize("kv,splits", [(False, (5,)), (False, (3, 12)), (True, (5, 8))])
def test_streaming_continues_an_open_chunk(kv, splits):
    """Calls cut inside chunks: each continued chunk runs as the fused forward's first chunk (``cont``)."""
    _check(kv, 21, 5, 7, splits=splits, seed=len(splits))


@pytest.mark.parametrize("kv", [False, True])
def test_mid_chunk_state_with_anchors(kv):
    """A state resumed inside a chunk whose anchors differ from its weights: gradients reach the anchors."""
    _check(kv, 9, 6, 5, anchors=True, seed=5)


def test_ops_use_the_fused_forward(monkeypatch):
    """``op.dgd_memory`` runs the one-launch forward once per call segment (not per chunk)."""
    calls = []

    def counting(*args):
        calls.append(args[2])  # cont
        return op.chunks_forward(*args)

    monkeypatch.setattr(op.TRITON_STEP, "chunks_forward", counting)
    leaves, st, _ = _inputs((), 21, 5, 7, True, 0)
    args = [leaves[n][..., 2:, :] for n in ("k", "v", "q")] + [leaves[n][..., 2:] for n in ("eta", "alpha", "beta")]
    st.offset = 2
    op.dgd_memory(*args, st, chunk_size=CHUNK)
    assert calls == [True, False]  # the rest of the open chunk, then tokens 8-20 (two chunks) in one launch


@pytest.mark.parametrize("flags,match", [(dict(velocity_decay=False), "velocity_decay=False"),
                                         (dict(act="relu"), "act='relu'")])
def test_unsupported_flag_is_a_clear_error(flags, match):
    leaves, st, _ = _inputs((), 7, 5, 7, True, 0)
    args = [leaves[n] for n in ("k", "v", "q", "eta", "alpha", "beta")]
    with pytest.raises(ValueError, match=match):
        op.dgd_memory(*args, st, chunk_size=CHUNK, **flags)
    with pytest.raises(ValueError, match=match):  # the kernel's own check, whatever the op checked before
        op.chunks_forward(op.Flags(**flags), False, False, *([None] * 8))


def test_too_large_for_the_device_runs_the_per_chunk_kernels(monkeypatch):
    """A configuration whose kernel needs more shared memory than the GPU has (raised by Triton before the
    launch) runs the per-chunk kernels instead, with a warning: same results."""
    from triton.runtime.errors import OutOfResources

    class TooLarge:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                raise OutOfResources(360448, 232448, "shared memory")
            return launch

    monkeypatch.setattr(op, "dgd_chunks_fwd_kernel", TooLarge())
    monkeypatch.setattr(op, "_DECLINED", set())
    with pytest.warns(UserWarning, match="per-chunk Triton kernels"):
        _check(False, 9, 5, 7, seed=9)
    assert len(op._DECLINED) == 1
