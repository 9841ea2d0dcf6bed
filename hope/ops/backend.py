"""Backend dispatch: every memory op has ``naive``, ``chunk`` and (on CUDA) ``triton`` implementations."""

from __future__ import annotations

import os
from types import SimpleNamespace

import torch

from hope.ops.cms import cms_level_chunk, cms_level_naive
from hope.ops.dgd import dgd_memory_chunk, dgd_memory_naive, smt_kv_chunk, smt_kv_naive

_TORCH_OPS = {
    "naive": SimpleNamespace(dgd_memory=dgd_memory_naive, smt_kv=smt_kv_naive, cms_level=cms_level_naive),
    "chunk": SimpleNamespace(dgd_memory=dgd_memory_chunk, smt_kv=smt_kv_chunk, cms_level=cms_level_chunk),
}


def _triton_ops() -> SimpleNamespace | None:
    """The Triton ops when the ``kernels`` package provides them, else None."""
    try:
        from kernels import triton_ops

        return triton_ops()
    except ImportError:  # triton (or the kernels package) is not installed
        return None


# The Triton kernels match the chunk backend under the Triton interpreter but have not yet been compiled and
# validated on a GPU (kernels/README.md), so ``auto`` picks them only when this opt-in variable is set.
AUTO_TRITON_ENV = "HOPE_AUTO_TRITON"


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """``auto`` is ``chunk``, or ``triton`` on CUDA when ``HOPE_AUTO_TRITON=1`` and the kernels import
    (identical semantics, so the choice never changes results beyond floating-point rounding)."""
    if backend == "auto":
        cuda = torch.device(device).type == "cuda"
        opt_in = os.environ.get(AUTO_TRITON_ENV) == "1"
        return "triton" if cuda and opt_in and _triton_ops() is not None else "chunk"
    return backend


def get_ops(backend: str, device: torch.device | str = "cpu") -> SimpleNamespace:
    """The op table (``dgd_memory``, ``smt_kv``, ``cms_level``) of a backend."""
    name = resolve_backend(backend, device)
    if name in _TORCH_OPS:
        return _TORCH_OPS[name]
    if name == "triton":
        ops = _triton_ops()
        if ops is None:
            raise NotImplementedError(
                "backend='triton' is not available yet: the Triton kernels have not landed in kernels/; "
                "use backend='chunk' (same semantics) or 'auto'"
            )
        return ops
    raise ValueError(f"unknown backend {backend!r}; expected one of naive, chunk, triton, auto")
