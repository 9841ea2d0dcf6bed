"""Triton DGD kernels vs the PyTorch chunk reference: outputs and every gradient, fp32, small odd shapes.

On CPU these run through the Triton interpreter (``conftest.py``); with ``TRITON_INTERPRET=0`` exported on a
CUDA machine they run the compiled kernels on the GPU. Kernel outputs are allocated NaN-filled, so an
element a kernel forgets to write makes a comparison fail.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

from hope.kernels.dgd import op  # noqa: E402
from hope.ops.dgd.chunk import dgd_memory_chunk, smt_kv_chunk  # noqa: E402
from hope.ops.dgd.common import MemoryState  # noqa: E402
from hope.ops.dgd.linear import linear_chunk  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEVICE = "cpu" if INTERPRET or not torch.cuda.is_available() else "cuda"
if DEVICE == "cpu" and not INTERPRET:
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1", allow_module_level=True)
ATOL, RTOL = 2e-5, 2e-4


def _close(name: str, got: torch.Tensor | None, want: torch.Tensor | None) -> None:
    assert (got is None) == (want is None), f"{name}: one side is None"
    if want is None:
        return
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values (unwritten kernel output?)"
    scale = want.abs().max().item() + 1e-6
    torch.testing.assert_close(got / scale, want / scale, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")


def _gates(lead, T, gen):
    eta = (0.05 + 0.9 * torch.rand(*lead, T, generator=gen)).to(DEVICE)
    alpha = (0.6 + 0.39 * torch.rand(*lead, T, generator=gen)).to(DEVICE)
    beta = (0.1 + 0.8 * torch.rand(*lead, T, generator=gen)).to(DEVICE)
    return eta, alpha, beta


def _state(stack, B, H, d, h, momentum, gen, anchors=False):
    """Leaf state tensors (requires_grad) and the MemoryState built from them."""
    def r(*shape, std=0.5):
        return (std * torch.randn(*stack, B, H, *shape, generator=gen)).to(DEVICE).requires_grad_()

    leaves = {"w1": r(d, h), "w2": r(h, d)}
    if momentum:
        leaves.update(v1=r(d, h, std=0.1), v2=r(h, d, std=0.1))
    if anchors:
        leaves.update(a1=r(d, h), a2=r(h, d))
    w1, w2 = leaves["w1"], leaves["w2"]
    a1, a2 = leaves.get("a1", w1), leaves.get("a2", w2)
    st = MemoryState(w1, w2, a1, a2, leaves.get("v1"), leaves.get("v2"), 0)
    return leaves, st


def _state_outputs(st: MemoryState) -> list[torch.Tensor]:
    return [t for t in (st.w1, st.w2, st.a1, st.a2, st.v1, st.v2) if t is not None]


def _compare(name, outs_ref, outs_ker, leaves, gen):
    for i, (a, b) in enumerate(zip(outs_ker, outs_ref)):
        _close(f"{name} output {i}", a, b)
    cots = [torch.randn(o.shape, generator=gen).to(DEVICE) for o in outs_ref]
    names = list(leaves)
    tensors = [leaves[k] for k in names]
    g_ref = torch.autograd.grad(outs_ref, tensors, cots, allow_unused=True)
    g_ker = torch.autograd.grad(outs_ker, tensors, cots, allow_unused=True)
    for k, a, b in zip(names, g_ker, g_ref):
        _close(f"{name} grad {k}", a, b)


# --------------------------------------------------------------------------------------------------------
# the kernel itself: one chunk of one linear map
@pytest.mark.parametrize("dgd", [True, False])
@pytest.mark.parametrize("has_x", [True, False])
@pytest.mark.parametrize("n,m,k,block_m", [(1, 4, 4, 64), (7, 5, 3, 64), (13, 20, 9, 16), (16, 8, 8, 64)])
def test_linear_chunk(dgd, has_x, n, m, k, block_m, monkeypatch):
    monkeypatch.setattr(op, "MAX_BLOCK_M", block_m)  # 16 with m = 20: two row blocks, partials summed
    gen = torch.Generator().manual_seed(n * 100 + m)
    lead = (2,)
    leaves = {
        "w": torch.randn(*lead, m, k, generator=gen),
        "u": torch.randn(*lead, n, k, generator=gen),
        "delta": torch.randn(*lead, n, m, generator=gen),
        "eta": torch.rand(*lead, n, generator=gen),
        "log_alpha": torch.log(0.5 + 0.5 * torch.rand(*lead, n, generator=gen)),
    }
    if has_x:
        leaves["x"] = torch.randn(*lead, n, k, generator=gen)
    leaves = {key: t.to(DEVICE).requires_grad_() for key, t in leaves.items()}
    args = (leaves["w"], leaves["u"], leaves["delta"], leaves.get("x"), leaves["eta"], leaves["log_alpha"],
            dgd)
    ref = [t for t in linear_chunk(*args) if t is not None]
    ker = [t for t in op.linear_chunk(*args) if t is not None]
    assert len(ref) == len(ker) == (3 if has_x else 2)
    _compare("linear_chunk", ref, ker, leaves, gen)


def test_linear_chunk_broadcast_gates():
    """Gates broadcast over a stacked memory axis (as in smt_kv) get their gradient summed back."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(2, 3, 5, 4, generator=gen).requires_grad_()
    u = torch.randn(3, 6, 4, generator=gen).requires_grad_()
    delta = torch.randn(2, 3, 6, 5, generator=gen).requires_grad_()
    eta = torch.rand(3, 6, generator=gen).requires_grad_()
    la = torch.log(0.5 + 0.5 * torch.rand(3, 6, generator=gen)).requires_grad_()
    leaves = dict(w=w, u=u, delta=delta, eta=eta, la=la)
    ref = [t for t in linear_chunk(w, u.expand(2, 3, 6, 4), delta, None, eta, la, True) if t is not None]
    ker = [t for t in op.linear_chunk(w, u.expand(2, 3, 6, 4), delta, None, eta, la, True) if t is not None]
    _compare("broadcast", ref, ker, leaves, gen)


# --------------------------------------------------------------------------------------------------------
# the ops: dgd_memory and smt_kv, all inputs and the initial state
CASES = [  # (B, H, d, h, T, chunk_size, dgd, momentum)
    (1, 1, 4, 4, 1, 4, True, True),
    (2, 1, 4, 4, 7, 3, True, True),  # partial final chunk
    (1, 2, 8, 8, 13, 13, True, True),  # one chunk covers T
    (2, 2, 8, 4, 7, 7, False, True),
    (1, 1, 4, 8, 13, 5, True, False),
    (2, 1, 8, 8, 7, 16, False, False),  # chunk longer than T
]


@pytest.mark.parametrize("self_target", [True, False])
@pytest.mark.parametrize("B,H,d,h,T,chunk,dgd,momentum", CASES)
def test_dgd_memory(B, H, d, h, T, chunk, dgd, momentum, self_target):
    gen = torch.Generator().manual_seed(B * 1000 + H * 100 + T * 10 + chunk)
    leaves, st = _state((), B, H, d, h, momentum, gen)
    k, v, q = (torch.randn(B, H, T, d, generator=gen).to(DEVICE).requires_grad_() for _ in range(3))
    eta, alpha, beta = (g.requires_grad_() for g in _gates((B, H), T, gen))
    leaves.update(k=k, v=v, q=q, eta=eta, alpha=alpha, beta=beta)
    kw = dict(chunk_size=chunk, dgd=dgd, momentum=momentum, self_target=self_target)
    o_ref, st_ref = dgd_memory_chunk(k, v, q, eta, alpha, beta, st, **kw)
    o_ker, st_ker = op.dgd_memory(k, v, q, eta, alpha, beta, st, **kw)
    assert st_ker.offset == st_ref.offset
    _compare("dgd_memory", [o_ref, *_state_outputs(st_ref)], [o_ker, *_state_outputs(st_ker)], leaves, gen)


@pytest.mark.parametrize("B,H,d,h,T,chunk,dgd,momentum", CASES[:5])
def test_smt_kv(B, H, d, h, T, chunk, dgd, momentum):
    gen = torch.Generator().manual_seed(B * 1000 + H * 100 + T * 10 + chunk + 1)
    leaves, st = _state((2,), B, H, d, h, momentum, gen)
    k_in, v_in = (torch.randn(B, H, T, d, generator=gen).to(DEVICE).requires_grad_() for _ in range(2))
    eta, alpha, beta = (g.requires_grad_() for g in _gates((B, H), T, gen))
    leaves.update(k_in=k_in, v_in=v_in, eta=eta, alpha=alpha, beta=beta)
    kw = dict(chunk_size=chunk, dgd=dgd, momentum=momentum)
    k_ref, v_ref, st_ref = smt_kv_chunk(k_in, v_in, eta, alpha, beta, st, **kw)
    k_ker, v_ker, st_ker = op.smt_kv(k_in, v_in, eta, alpha, beta, st, **kw)
    _compare("smt_kv", [k_ref, v_ref, *_state_outputs(st_ref)], [k_ker, v_ker, *_state_outputs(st_ker)],
             leaves, gen)


# --------------------------------------------------------------------------------------------------------
# streaming: two calls (resuming inside a chunk) == one call, and == the reference on a mid-chunk state
@pytest.mark.parametrize("split", [3, 5])
def test_dgd_memory_streaming(split):
    gen = torch.Generator().manual_seed(split)
    B, H, d, T, chunk = 1, 2, 4, 11, 4
    leaves, st = _state((), B, H, d, d, True, gen)
    k, v, q = (torch.randn(B, H, T, d, generator=gen).to(DEVICE).requires_grad_() for _ in range(3))
    eta, alpha, beta = (g.requires_grad_() for g in _gates((B, H), T, gen))
    leaves.update(k=k, v=v, q=q, eta=eta, alpha=alpha, beta=beta)
    kw = dict(chunk_size=chunk)
    o_one, st_one = op.dgd_memory(k, v, q, eta, alpha, beta, st, **kw)
    sl = (slice(None), slice(None), slice(0, split))
    sr = (slice(None), slice(None), slice(split, T))
    o_a, st_a = op.dgd_memory(k[sl], v[sl], q[sl], eta[sl], alpha[sl], beta[sl], st, **kw)
    assert st_a.offset == split % chunk
    o_b, st_b = op.dgd_memory(k[sr], v[sr], q[sr], eta[sr], alpha[sr], beta[sr], st_a, **kw)
    assert st_b.offset == st_one.offset == T % chunk
    two_calls = [torch.cat([o_a, o_b], -2), *_state_outputs(st_b)]
    _compare("streaming", [o_one, *_state_outputs(st_one)], two_calls, leaves, gen)


def test_smt_kv_mid_chunk_state():
    """A state resumed inside a chunk (anchors differ from the weights): gradients reach the anchors."""
    gen = torch.Generator().manual_seed(7)
    B, H, d, T, chunk = 2, 1, 4, 6, 4
    leaves, st = _state((2,), B, H, d, d, True, gen, anchors=True)
    st.offset = 2
    k_in, v_in = (torch.randn(B, H, T, d, generator=gen).to(DEVICE).requires_grad_() for _ in range(2))
    eta, alpha, beta = (g.requires_grad_() for g in _gates((B, H), T, gen))
    leaves.update(k_in=k_in, v_in=v_in, eta=eta, alpha=alpha, beta=beta)
    k_ref, v_ref, st_ref = smt_kv_chunk(k_in, v_in, eta, alpha, beta, st, chunk_size=chunk)
    k_ker, v_ker, st_ker = op.smt_kv(k_in, v_in, eta, alpha, beta, st, chunk_size=chunk)
    assert st_ker.offset == st_ref.offset == 0
    _compare("smt_kv mid-chunk", [k_ref, v_ref, *_state_outputs(st_ref)],
             [k_ker, v_ker, *_state_outputs(st_ker)], leaves, gen)


# --------------------------------------------------------------------------------------------------------
# integration: the backend table and a model with backend="triton"
def test_backend_triton_model_matches_chunk():
    from inspect import unwrap

    from hope.config import HopeConfig
    from hope.model import HopeLM
    from hope.ops.backend import get_ops

    ops = get_ops("triton", DEVICE)  # the kernels' ops, hidden from torch.compile
    assert unwrap(ops.dgd_memory) is op.dgd_memory and unwrap(ops.smt_kv) is op.smt_kv
    kw = dict(vocab_size=32, dim=16, n_layers=1, n_heads=2, chunk_memory=3, chunk_other=4,
              cms_chunk_sizes=(None,), cms_hidden=16)
    torch.manual_seed(0)
    ref_model = HopeLM(HopeConfig(backend="chunk", **kw)).to(DEVICE)
    ker_model = HopeLM(HopeConfig(backend="triton", **kw)).to(DEVICE)
    ker_model.load_state_dict(ref_model.state_dict())
    ids = torch.randint(0, 32, (2, 6), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    out_ref = ref_model(ids, labels=ids)
    out_ker = ker_model(ids, labels=ids)
    _close("logits", out_ker.logits, out_ref.logits)
    out_ref.loss.backward()
    out_ker.loss.backward()
    for (name, p_ref), p_ker in zip(ref_model.named_parameters(), ker_model.parameters()):
        _close(f"grad {name}", p_ker.grad, p_ref.grad)
