"""The on-device parity check that gates ``backend="auto"`` on CUDA, run here under the Triton interpreter."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("triton")

from hope.kernels import selfcheck, triton_ops  # noqa: E402
from hope.ops import backend  # noqa: E402
from hope.ops.dgd.chunk import dgd_memory_chunk, smt_kv_chunk  # noqa: E402

if os.environ.get("TRITON_INTERPRET", "0") != "1" and not torch.cuda.is_available():
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1", allow_module_level=True)
DEVICE = "cuda" if os.environ.get("TRITON_INTERPRET", "0") != "1" else "cpu"


class _DoubleGrad(torch.autograd.Function):
    """Identity forward, doubled gradient: a bug that only a gradient comparison can see."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return 2 * g


def test_kernels_pass_their_parity_check():
    assert selfcheck.check(triton_ops(), DEVICE) is None


def test_check_runs_from_inference_contexts():
    """The first call of a model may come from no_grad or inference_mode (generation, eval)."""
    selfcheck.check_device.cache_clear()
    with torch.inference_mode():
        assert selfcheck.check_device(DEVICE) is None
    selfcheck.check_device.cache_clear()


def test_parity_check_catches_wrong_outputs_and_gradients():
    def wrong_output(*args, **kwargs):
        out, state = dgd_memory_chunk(*args, **kwargs)
        return out * 1.01, state

    def wrong_grad(k, *args, **kwargs):
        return smt_kv_chunk(_DoubleGrad.apply(k), *args, **kwargs)

    msg = selfcheck.check(SimpleNamespace(dgd_memory=wrong_output, smt_kv=smt_kv_chunk), DEVICE)
    assert msg is not None and msg.startswith("dgd_memory output 0")
    msg = selfcheck.check(SimpleNamespace(dgd_memory=dgd_memory_chunk, smt_kv=wrong_grad), DEVICE)
    assert msg is not None and msg.startswith("smt_kv gradient of k")

    def crash(*args, **kwargs):
        raise RuntimeError("no kernel image for this GPU")

    msg = selfcheck.check(SimpleNamespace(dgd_memory=crash, smt_kv=smt_kv_chunk), DEVICE)
    assert "no kernel image" in msg


def test_auto_backend_uses_triton_on_cuda_only_after_the_check(monkeypatch):
    monkeypatch.delenv(backend.AUTO_TRITON_ENV, raising=False)
    monkeypatch.setattr(selfcheck, "check_device", lambda device: None)
    assert backend.resolve_backend("auto", "cuda") == "triton"
    assert backend.resolve_backend("auto", "cpu") == "chunk"
    monkeypatch.setattr(selfcheck, "check_device", lambda device: "dgd_memory output 0: max abs difference 1")
    with pytest.warns(UserWarning, match="failed their parity check"):
        assert backend.resolve_backend("auto", "cuda") == "chunk"
    monkeypatch.setenv(backend.AUTO_TRITON_ENV, "0")
    assert backend.resolve_backend("auto", "cuda") == "chunk"
    assert backend.resolve_backend("triton", "cpu") == "triton"


def test_gpu_check_script_refuses_without_a_gpu():
    """scripts/gpu_check.sh is valid bash and, where torch sees no CUDA GPU, stops with a clear message."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the script would run the real check")
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode != 0 and "needs a CUDA GPU" in proc.stderr
