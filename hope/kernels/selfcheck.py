"""On-device parity check of the Triton kernels against the PyTorch chunk backend.

``backend="auto"`` selects the kernels on CUDA only after this check passes on that device (once per device
and process): a small fp32 run of ``dgd_memory`` and ``smt_kv`` with DGD and momentum on, a partial last
chunk and every gradient compared. The kernels were validated under the Triton interpreter but not compiled
on every GPU generation, so a miscompile or unsupported feature on the user's GPU must not silently change
training; when the check fails ``auto`` warns, says why, and uses the chunk backend (same semantics).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from hope.ops.dgd.chunk import dgd_memory_chunk, smt_kv_chunk
from hope.ops.dgd.common import MemoryState

#: fp32 tolerance relative to the largest magnitude of each compared tensor (as in tests/kernels).
ATOL, RTOL = 1e-4, 1e-3


def _inputs(device: torch.device, stack: tuple[int, ...], gen: torch.Generator) -> dict[str, Tensor]:
    B, H, T, d, h = 2, 2, 11, 8, 12

    def r(*shape, std=1.0):
        return (std * torch.randn(*shape, generator=gen)).to(device).requires_grad_()

    def gate(lo, hi):
        return (lo + (hi - lo) * torch.rand(B, H, T, generator=gen)).to(device).requires_grad_()

    return dict(k=r(B, H, T, d), v=r(B, H, T, d), q=r(B, H, T, d), eta=gate(0.05, 0.9), alpha=gate(0.6, 0.99),
                beta=gate(0.1, 0.9), w1=r(*stack, H, d, h, std=0.5), w2=r(*stack, H, h, d, std=0.5))


def _run(op, inp: dict[str, Tensor], kv: bool) -> list[Tensor]:
    state = MemoryState.from_params(inp["w1"], inp["w2"], inp["k"].shape[0], True)
    args = (inp["k"], inp["v"]) if kv else (inp["k"], inp["v"], inp["q"])
    *outs, st = op(*args, inp["eta"], inp["alpha"], inp["beta"], state, chunk_size=4)
    return [*outs, st.w1, st.w2, st.a1, st.a2, st.v1, st.v2]


def _mismatch(name: str, got: Tensor | None, want: Tensor | None) -> str | None:
    if want is None:
        return None if got is None else f"{name}: unexpected gradient"
    if got is None or got.shape != want.shape:
        return f"{name}: missing or wrong shape"
    scale = want.abs().max().item() + 1e-6
    if not torch.isfinite(got).all():
        return f"{name}: non-finite values"
    if not torch.allclose(got / scale, want / scale, atol=ATOL, rtol=RTOL):
        return f"{name}: max abs difference {(got - want).abs().max().item():.3g} (scale {scale:.3g})"
    return None


def check(ops, device: torch.device | str) -> str | None:
    """Compare ``ops.dgd_memory`` / ``ops.smt_kv`` with the chunk backend on ``device``; None when they agree,
    else a description of the first mismatch (outputs, end states, then the gradients of every input)."""
    device = torch.device(device)
    for name, op, ref, stack in (("dgd_memory", ops.dgd_memory, dgd_memory_chunk, ()),
                                 ("smt_kv", ops.smt_kv, smt_kv_chunk, (2,))):
        gen = torch.Generator().manual_seed(0)
        inp = _inputs(device, stack, gen)
        try:
            got, want = _run(op, inp, bool(stack)), _run(ref, inp, bool(stack))
            for i, (a, b) in enumerate(zip(got, want)):
                if (msg := _mismatch(f"{name} output {i}", a.detach(), b.detach())) is not None:
                    return msg
            cots = [torch.randn(t.shape, generator=gen).to(device) for t in want]
            leaves = list(inp.values())
            g_got = torch.autograd.grad(got, leaves, cots, allow_unused=True)
            g_want = torch.autograd.grad(want, leaves, cots, allow_unused=True)
        except Exception as err:  # a kernel that does not compile or launch on this device
            return f"{name}: {type(err).__name__}: {err}"
        for key, a, b in zip(inp, g_got, g_want):
            if (msg := _mismatch(f"{name} gradient of {key}", a, b)) is not None:
                return msg
    return None


@functools.cache
def check_device(device: str) -> str | None:
    """:func:`check` of the Triton op table on ``device``, run once per device and process (with gradients
    on and autocast off, whatever the caller's context: the first model call may come from ``no_grad``)."""
    from hope.kernels import triton_ops

    dev = torch.device(device)
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(dev.type, enabled=False):
        return check(triton_ops(), dev)
