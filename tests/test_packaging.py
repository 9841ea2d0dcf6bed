"""Packaging integrity: no top-level module that shadows a package of the ecosystem, and no silent backend
fallback when the Triton kernels cannot be imported."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from hope import HopeConfig, HopeLM
from hope.ops import backend

REPO = Path(__file__).resolve().parents[1]


def test_imports_from_the_repository_root_beside_hugging_face_kernels() -> None:
    """transformers >= 5 imports Hugging Face's ``kernels``; from the repository root (pytest, train.py,
    ``python -m eval...``) it must be theirs, and ``hope.hf`` and ``hope.kernels`` must import beside it."""
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) < 5 or importlib.util.find_spec("kernels") is None:
        pytest.skip("needs transformers >= 5 with Hugging Face's kernels package installed")
    code = ("import transformers; from transformers import PreTrainedModel; import hope.hf, hope.kernels; "
            "import kernels; print(kernels.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert REPO not in Path(out.stdout.strip()).resolve().parents


@pytest.mark.slow
def test_the_wheel_installs_only_the_hope_package(tmp_path: Path) -> None:
    """``pip install .`` (and ``-e .``, same package list) puts one top-level package on the path: ``hope``,
    which no installed distribution but this one provides."""
    pytest.importorskip("setuptools")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
           str(REPO)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = tmp_path.glob("hope_nl-*.whl")
    names = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    top = {n.removesuffix(".py") for n in names if not n.endswith(".dist-info")}
    assert top == {"hope"}
    others = {name: dists for name, dists in importlib.metadata.packages_distributions().items()
              if name in top and set(dists) - {"hope-nl", "hope_nl"}}
    assert not others, f"top-level names also provided by other distributions: {others}"


def _tiny(backend_name: str) -> HopeLM:
    return HopeLM(HopeConfig(vocab_size=32, dim=16, n_layers=1, n_heads=2, cms_chunk_sizes=(None,),
                             cms_hidden=16, chunk_memory=4, chunk_other=4, backend=backend_name))


def test_triton_backend_raises_when_the_kernels_cannot_be_imported(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "hope.kernels", None)  # import hope.kernels now raises ImportError
    with pytest.raises(ImportError, match=r"backend='triton' needs the Triton kernels of hope\.kernels"):
        _tiny("triton")(torch.randint(0, 32, (1, 5)))
    with pytest.warns(UserWarning, match=r"cannot be imported .*using the chunk backend"):
        assert backend.resolve_backend("auto", "cuda") == "chunk"  # only auto falls back, and says why
    assert backend.resolve_backend("auto", "cpu") == "chunk"  # the documented CPU choice, not a fallback
