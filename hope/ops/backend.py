"""Backend dispatch: every memory op has ``naive``, ``chunk`` and (on CUDA) ``triton`` implementations."""

from __future__ import annotations

import functools
import os
import warnings
from types import SimpleNamespace

import torch

from hope.ops.cms import cms_level_chunk, cms_level_naive
from hope.ops.dgd import dgd_memory_chunk, dgd_memory_naive, smt_kv_chunk, smt_kv_naive


def _opaque(ops: SimpleNamespace) -> SimpleNamespace:
    """``ops`` hidden from ``torch.compile`` (``torch.compiler.disable``): a compiled block (``train.compile``)
    breaks its graph around each memory op instead of unrolling the op's loop over chunks (or tokens) into one
    graph that grows with the sequence (``tests/test_model.py::test_compiled_blocks_break_around_the_memory_ops``).
    The ops' per-chunk functions compile on their own with ``HOPE_COMPILE_CHUNKS=1``."""
    return _opaque_table(tuple(vars(ops).items()))


@functools.cache
def _opaque_table(ops: tuple) -> SimpleNamespace:  # one wrapper per op function, made once
    return SimpleNamespace(**{name: torch.compiler.disable(fn) for name, fn in ops})


_TORCH_OPS = {
    "naive": _opaque(SimpleNamespace(dgd_memory=dgd_memory_naive, smt_kv=smt_kv_naive, cms_level=cms_level_naive)),
    "chunk": _opaque(SimpleNamespace(dgd_memory=dgd_memory_chunk, smt_kv=smt_kv_chunk, cms_level=cms_level_chunk)),
}


def _triton_ops() -> tuple[SimpleNamespace | None, str | None]:
    """``(ops, None)`` when :mod:`hope.kernels` imports, else ``(None, why)`` (the import error, named)."""
    try:
        from hope.kernels import triton_ops

        return triton_ops(), None
    except ImportError as e:  # triton is not installed, or it cannot load on this machine
        return None, f"{type(e).__name__}: {e}"


#: ``HOPE_AUTO_TRITON=0`` keeps ``auto`` on the chunk backend on CUDA too.
AUTO_TRITON_ENV = "HOPE_AUTO_TRITON"


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """``auto`` is ``triton`` on CUDA when the kernels import and pass their on-device parity check
    (:mod:`hope.kernels.selfcheck`, once per device), else ``chunk``. Both implement identical semantics, so the
    choice never changes results beyond floating-point rounding; on CUDA, kernels that cannot be imported or
    fail the check are reported with a warning that names the reason. Other names are returned unchanged:
    an explicit ``triton`` never falls back."""
    if backend != "auto":
        return backend
    device = torch.device(device)
    if device.type != "cuda" or os.environ.get(AUTO_TRITON_ENV) == "0":
        return "chunk"
    ops, why = _triton_ops()
    if ops is None:
        warnings.warn(f"backend='auto': the Triton kernels (hope.kernels) cannot be imported on {device} ({why}); "
                      f"using the chunk backend (same semantics). pip install 'hope-nl[kernels]' installs triton.",
                      stacklevel=2)
        return "chunk"
    from hope.kernels.selfcheck import check_device

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
        ops, why = _triton_ops()
        if ops is None:
            raise ImportError(
                f"backend='triton' needs the Triton kernels of hope.kernels, which cannot be imported ({why}); "
                "install them with pip install 'hope-nl[kernels]', or use backend='chunk' (same semantics) or "
                "'auto' (triton on CUDA when it works, else chunk)"
            )
        return _opaque(ops)
    raise ValueError(f"unknown backend {backend!r}; expected one of naive, chunk, triton, auto")
