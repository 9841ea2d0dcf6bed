"""Offline on-chip fit of the one-launch DGD kernels on sm_90 (H100), without a GPU.

Compiles a kernel with Triton for ``GPUTarget("cuda", 90, 32)`` (Triton's bundled ``ptxas``, no device needed) and
reports what decides whether it launches: ``metadata.shared``, the shared memory Triton's launcher checks against
the device before the launch (``OutOfResources`` above it; an H100 allows 227 KB per block), and the registers per
thread and spill bytes of ``ptxas -v``.

Must run with ``TRITON_INTERPRET=0`` (set before ``triton`` is imported; under the interpreter ``triton.jit`` makes
functions that cannot be compiled), so the tests call it in a subprocess::

    TRITON_INTERPRET=0 python -m hope.kernels.fit --kernel bwd fwd kv kv_bwd --d 128 --h 128 --chunk 16 --dtype bf16

``--no-ptxas`` stops after the LLVM IR (the shared memory only): ``ptxas`` on the fp32 kernels at 128 takes many
minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from dataclasses import dataclass

#: Shared memory per block an H100 (sm_90) allows: 227 KB.
SM90_SHARED = 232448
KERNELS = ("fwd", "bwd", "kv", "kv_bwd", "chunk_bwd")
_INTS = ("P", "NC", "C", "D", "HID", "n", "M", "K", "NB")
_DTYPES = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}


@dataclass
class Fit:
    """One compiled configuration: shared memory (bytes), registers per thread, spill bytes (stores + loads)."""

    kernel: str
    shared: int
    registers: int
    spills: int
    num_warps: int

    @property
    def fits(self) -> bool:
        return self.shared <= SM90_SHARED

    def __str__(self) -> str:
        regs = "ptxas not run" if self.registers < 0 else f"{self.registers} registers/thread, {self.spills} B spilled"
        return (f"{self.kernel}: shared {self.shared / 1024:.0f} KB, {'fits' if self.fits else 'does NOT fit'} "
                f"sm_90 (227 KB), {regs}, {self.num_warps} warps")


class _SharedKnown(Exception):
    """Raised in place of the PTX stage when only the shared memory is wanted (it is known after the LLVM IR)."""

    def __init__(self, shared: int):
        super().__init__(shared)
        self.shared = shared


def _stop_before_ptx(*args):
    """``knobs.runtime.add_stages_inspection_hook``: skip PTX and ptxas (minutes for the fp32 kernels at 128).
    Called without arguments for its cache key, then as ``(backend, stages, options, language, capability)``."""
    if not args:
        return "-stop-before-ptx", None
    stages = args[1]

    def stop(src, metadata):
        raise _SharedKnown(metadata["shared"])

    stages["ptx"] = stop
    stages.pop("cubin", None)


def _kernel(name: str):
    from hope.kernels.dgd.bwd import linear_chunk_bwd_kernel
    from hope.kernels.dgd.chunks_bwd import dgd_chunks_bwd_kernel, kv_chunks_bwd_kernel
    from hope.kernels.dgd.chunks_fwd import dgd_chunks_fwd_kernel, kv_chunks_fwd_kernel

    return dict(fwd=dgd_chunks_fwd_kernel, bwd=dgd_chunks_bwd_kernel, kv=kv_chunks_fwd_kernel,
                kv_bwd=kv_chunks_bwd_kernel, chunk_bwd=linear_chunk_bwd_kernel)[name]


def constants(name: str, d: int, h: int, chunk: int, dtype: str, on: bool = True, act: int = 0) -> dict:
    """The constexpr arguments of kernel ``name`` as the wrapper (``op._chunks_meta``) passes them, with every
    flag ``on`` or off (``act``: the ``ACT`` code)."""
    import triton

    prec = "ieee" if dtype == "fp32" else "tf32"
    bt = max(16, triton.next_power_of_2(chunk))
    if name == "chunk_bwd":
        return dict(DGD=on, HAS_X=True, BT=bt, BM=max(16, min(64, triton.next_power_of_2(h))),
                    BK=max(16, triton.next_power_of_2(d)), DOT_PREC=prec)
    from hope.kernels.dgd.op import chunk_blocks

    const = dict(chunk_blocks(chunk, d, h, name == "kv_bwd"), ACT=act, DGD=on, DAMPING=on, UNIT=on, MOMENTUM=on,
                 CONT=on, DOT_PREC=prec)
    if name not in ("kv", "kv_bwd"):
        const["SELF_TARGET"] = on
    return const


def measure(name: str, d: int, h: int, chunk: int, dtype: str = "bf16", num_warps: int = 4, on: bool = True,
            act: int = 0, ptxas: bool = True) -> Fit:
    """Compile kernel ``name`` (``fwd``, ``bwd``, ``kv``, ``kv_bwd``, ``chunk_bwd``) for sm_90 at head size ``d``,
    hidden ``h``, chunk ``chunk``, ``dtype`` pointers, with every flag ``on`` (or off) and return its :class:`Fit`;
    without ``ptxas`` only down to the LLVM IR (the shared memory; registers and spills are then -1)."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _kernel(name)
    const = constants(name, d, h, chunk, dtype, on, act)
    sig = {n: "constexpr" if n in const else "i32" if n in _INTS else f"*{_DTYPES[dtype]}" for n in fn.arg_names}
    # the launcher's specialisation: pointers (torch allocations) and the sizes that are multiples of 16
    sizes = dict(C=chunk, n=chunk, D=d, K=d, HID=h, M=h)
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
             if sig[n].startswith("*") or sizes.get(n, 1) % 16 == 0}
    log = io.StringIO()
    old = knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile, knobs.runtime.add_stages_inspection_hook
    # make_cubin prints ptxas -v's report; a cached kernel would skip ptxas
    knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile = True, True
    knobs.runtime.add_stages_inspection_hook = None if ptxas else _stop_before_ptx
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(ASTSource(fn, sig, const, attrs), target=GPUTarget("cuda", 90, 32),
                                      options=dict(num_warps=num_warps))
    except _SharedKnown as known:
        return Fit(name, known.shared, -1, -1, num_warps)
    finally:
        (knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile,
         knobs.runtime.add_stages_inspection_hook) = old
    text = log.getvalue()
    regs = re.search(r"Used (\d+) registers", text)
    spills = [int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", text)]
    return Fit(name, compiled.metadata.shared, int(regs.group(1)) if regs else -1, sum(spills), num_warps)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kernel", nargs="+", choices=KERNELS, default=["fwd", "bwd", "kv"])
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--h", type=int, default=128)
    p.add_argument("--chunk", type=int, nargs="+", default=[16])
    p.add_argument("--dtype", choices=tuple(_DTYPES), default="bf16")
    p.add_argument("--num-warps", type=int, nargs="+", default=[4])
    p.add_argument("--flags", choices=("on", "off", "both"), default="on",
                   help="every flag on (SiLU), every flag off (tanh GELU), or both")
    p.add_argument("--no-ptxas", action="store_true", help="the shared memory only (no PTX, no ptxas)")
    a = p.parse_args(argv)
    flags = dict(on=[(True, 0)], off=[(False, 2)], both=[(True, 0), (False, 2)])[a.flags]
    for name in a.kernel:
        for chunk in a.chunk:
            for w in a.num_warps:
                for on, act in flags:
                    fit = measure(name, a.d, a.h, chunk, a.dtype, w, on, act, not a.no_ptxas)
                    print(f"d={a.d} h={a.h} chunk={chunk} {a.dtype} flags={'on' if on else 'off'} {fit}",
                          flush=True)


if __name__ == "__main__":
    main()
