"""Triton kernels of the HOPE memory ops (DESIGN.md "Backends"; see ``hope/kernels/README.md``).

``triton_ops()`` returns the op table of the ``triton`` backend (consumed by :mod:`hope.ops.backend`).
Triton is imported lazily, so ``import hope.kernels`` works without it; on CPU the kernels run only under the
Triton interpreter (``TRITON_INTERPRET=1`` set before ``triton`` is first imported).
"""

from __future__ import annotations

from types import SimpleNamespace


def triton_ops() -> SimpleNamespace:
    """``SimpleNamespace(dgd_memory=..., smt_kv=..., cms_level=...)`` backed by the Triton kernels.

    ``cms_level`` is the PyTorch chunk implementation: one summed gradient step per chunk of a SwiGLU MLP
    is a handful of large GEMMs that cuBLAS already runs at roofline (no kernel needed).
    """
    from hope.kernels.dgd.op import dgd_memory, smt_kv
    from hope.ops.cms import cms_level_chunk

    return SimpleNamespace(dgd_memory=dgd_memory, smt_kv=smt_kv, cms_level=cms_level_chunk)


__all__ = ["triton_ops"]
