"""The offline sm_90 compile of the kernels (``hope.kernels.fit``, Triton's bundled ptxas, no GPU): the interpreter
runs code the compiler rejects (e.g. a loop-carried variable changing type), so every kernel is compiled with all
flags on and all off; and the one-launch kernels fit an H100's shared memory at the presets' head size 128."""

from __future__ import annotations

import os
import sys

import pytest
from subprocess_helpers import run_command

triton = pytest.importorskip("triton")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fit(*args: str) -> list[str]:
    """``python -m hope.kernels.fit *args`` compiled (``TRITON_INTERPRET=0``) in a subprocess: its report lines."""
    if not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")):
        pytest.skip("no bundled ptxas")
    env = dict(os.environ, TRITON_INTERPRET="0")
    r = run_command([sys.executable, "-m", "hope.kernels.fit", *args], timeout=900, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.splitlines()


def test_compiles_for_sm90():
    """The fused backward, the fused forward, the key/value forward and backward and the per-chunk backward (they
    share helpers), all flags on and all off, small blocks, fp32."""
    lines = _fit("--kernel", "bwd", "fwd", "kv", "kv_bwd", "chunk_bwd", "--d", "16", "--h", "16", "--chunk", "16",
                 "--dtype", "fp32", "--flags", "both")
    assert len(lines) == 10 and all(", fits " in line for line in lines), lines


def test_shared_memory_only():
    """``--no-ptxas`` stops after the LLVM IR: the shared memory, no register figures."""
    lines = _fit("--kernel", "fwd", "--d", "16", "--h", "16", "--chunk", "16", "--dtype", "fp32", "--no-ptxas")
    assert len(lines) == 1 and ", fits " in lines[0] and "ptxas not run" in lines[0], lines


@pytest.mark.slow
def test_head_size_128_fits_h100():
    """The presets' shapes (d = h = 128, bf16, 4 warps): the main memory's forward and backward at chunk 16 and
    the key/value forward at chunk 64 need at most sm_90's 227 KB of shared memory (``STAGE`` on)."""
    lines = _fit("--kernel", "fwd", "bwd", "--d", "128", "--h", "128", "--chunk", "16")
    lines += _fit("--kernel", "kv", "--d", "128", "--h", "128", "--chunk", "64")
    assert len(lines) == 3 and all(", fits " in line for line in lines), lines
