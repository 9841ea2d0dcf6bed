"""Backend dispatch: every memory op has ``naive``, ``chunk`` and (on CUDA) ``triton`` implementations."""

from __future__ import annotations

import os
import warnings
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


#: ``HOPE_AUTO_TRITON=0`` keeps ``auto`` on the chunk backend on CUDA too.
AUTO_TRITON_ENV = "HOPE_AUTO_TRITON"


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """``auto`` is ``triton`` on CUDA when the kernels import and pass their on-device parity check
    (:mod:`kernels.selfcheck`, once per device), else ``chunk``. Both implement identical semantics, so the
    choice never changes results beyond floating-point rounding; a failed check is reported with a warning."""
    if backend != "auto":
        return backend
    device = torch.device(device)
    if device.type != "cuda" or os.environ.get(AUTO_TRITON_ENV) == "0" or _triton_ops() is None:
        return "chunk"
    from kernels.selfcheck import check_device

    problem = check_device(str(device))
    if problem is not None:
        warnings.warn(f"backend='auto': the Triton kernels failed their parity check on {device} ({problem}); "
                      f"using the chunk backend (same semantics). Set {AUTO_TRITON_ENV}=0 to skip the check.",
                      stacklevel=2)
        return "chunk"
    return "triton"


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
