"""Checkpoints: written atomically, verified on load, the last ``keep_last`` kept; ``load_model`` for eval.

Layout of a run and of one checkpoint::

    <out_dir>/checkpoints/step_00000300/
        model.safetensors    full model weights (the HopeLM state dict; tied weights stored once)
        config.json          HopeConfig.to_dict()
        train_config.json    TrainConfig.to_dict() of the run that wrote it
        train_state.json     step, tokens seen, data position, non-finite counter, world size, parallel mode
        optimizer.pt         optimizer state dict (single process, DDP); torch.load(weights_only=True)
        sharded/             FSDP2 runs instead: model + optimizer shards (torch.distributed.checkpoint)
        rng_rank<r>.pt       RNG states of process r, read with torch.load(weights_only=True)
        hope_tokenizer.json  the tokenizer's spec and fingerprint, beside its Hugging Face files
        tokenizer.json       (tokenizer_config.json): the exact tokenizer of the run
        manifest.json        written last: size and SHA-256 of every other file

A checkpoint is first written to ``<out_dir>/checkpoints/.tmp-step_...`` and renamed into place once its
manifest is complete, so a killed run leaves either the whole checkpoint or none. Loading verifies the
manifest (a truncated or corrupted file raises :class:`CheckpointError`; nothing is loaded silently).
``model.safetensors`` + ``config.json`` are all :func:`load_model` needs; :func:`load_model` and
:func:`load_tokenizer` are the project's one reader of model folders (train.py checkpoints, run directories,
``hope.hf`` ``save_pretrained`` folders), used by training, evaluation, ``hope.hf`` and the CLI tools. Note: the
``.metadata`` file that torch.distributed.checkpoint writes in ``sharded/`` is a pickle; resume only from
checkpoints you wrote (share models as ``model.safetensors`` + ``config.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hope.config import HopeConfig
from hope.model import HopeLM
from hope.training.tokenizer import SPEC_FILE, Tokenizer, build_tokenizer, load_saved

STEP_DIR = re.compile(r"^step_(\d+)$")
# train config fields a resumed run must share with the checkpoint (others may change, e.g. max_steps)
MUST_MATCH = ("tokenizer", "data", "data_config", "seq_len")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupted, or does not fit the current run."""


# ----------------------------------------------------------------------------- files and manifest
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())


def write_manifest(ckpt: Path) -> None:
    files = {str(p.relative_to(ckpt)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(ckpt.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    tmp = ckpt / "manifest.json.tmp"
    tmp.write_text(json.dumps({"files": files}, indent=1))
    _fsync_tree(ckpt)
    tmp.rename(ckpt / "manifest.json")


def verify_checkpoint(ckpt: str | Path, files: tuple[str, ...] | None = None) -> Path:
    """Check ``ckpt`` against its manifest (all files, or only ``files``); raise :class:`CheckpointError`."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise CheckpointError(f"checkpoint {str(ckpt)!r} does not exist")
    try:
        manifest = json.loads((ckpt / "manifest.json").read_text())["files"]
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {ckpt} has no manifest.json: it is incomplete (a run was killed "
                              "while writing it?) and will not be loaded") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {ckpt}: manifest.json is corrupt ({e})") from None
    for name, info in manifest.items():
        if files is not None and name not in files and not any(name.startswith(f + "/") for f in files):
            continue
        path = ckpt / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {ckpt}: {name} is missing")
        if path.stat().st_size != info["bytes"]:
            raise CheckpointError(f"checkpoint {ckpt}: {name} has {path.stat().st_size} bytes, the manifest "
                                  f"says {info['bytes']} (truncated?)")
        if _sha256(path) != info["sha256"]:
            raise CheckpointError(f"checkpoint {ckpt}: {name} does not match its SHA-256 (corrupted)")
    return ckpt


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints (``step_*`` directories) under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or the latest one in a run directory (``<out_dir>``) or its checkpoints/."""
    path = Path(path).expanduser()
    if (path / "manifest.json").exists() or STEP_DIR.match(path.name):
        return path
    for root in (path / "checkpoints", path):
        found = list_checkpoints(root)
        if found:
            return found[-1]
    raise CheckpointError(f"no checkpoint found at {str(path)!r} (expected a step_* directory or a run "
                          "directory holding checkpoints/step_*)")


# ----------------------------------------------------------------------------- model weights
def _dedupe(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep one name per storage (tied embeddings), contiguous CPU tensors for safetensors."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.device.type != "meta" else (id(v), 0)
        if key in seen:
            continue
        seen.add(key)
        out[k] = v.detach().to("cpu").contiguous()
    return out


def save_model_file(state: dict[str, torch.Tensor], path: Path) -> None:
    save_file(_dedupe(state), str(path))


#: wrapper prefixes of saved state dicts: torch.compile, DDP, and hope.hf's ``HopeForCausalLM.model``
WRAPPER_PREFIXES = ("_orig_mod.", "module.", "model.")


def strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove each prefix of ``WRAPPER_PREFIXES`` that every key carries (HopeLM's own names never start
    with one, so a prefix on only some keys is left for the strict load to report)."""
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_model_weights(model: nn.Module, path: Path) -> None:
    """Load ``model.safetensors`` into ``model``; only tied aliases may be absent, nothing may be extra."""
    try:
        state = strip_wrapper_prefixes(load_file(str(path)))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read the weights ({e})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    ptrs = {}
    for k, v in model.state_dict().items():
        ptrs.setdefault(v.untyped_storage().data_ptr(), []).append(k)
    aliases = {k for names in ptrs.values() for k in names if any(n in state for n in names)}
    missing = [k for k in missing if k not in aliases]
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit the model: missing {missing[:8]}, "
                              f"unexpected {unexpected[:8]}")


def read_model_config(folder: Path) -> HopeConfig:
    """The HopeConfig of a model folder: ``HopeConfig.to_dict()`` (train.py), the same under a ``model`` key,
    or a ``hope.hf`` config (HopeConfig fields plus transformers' own, ``model_type="hope"``)."""
    try:
        data = json.loads((folder / "config.json").read_text())
        data = data.get("model", data)
        if data.get("model_type") == "hope":
            fields = set(HopeConfig().to_dict())
            data = {k: v for k, v in data.items() if k in fields}
        return HopeConfig.from_dict(data)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{folder}/config.json is not a valid HopeConfig ({e})") from None


def _is_exported(path: Path) -> bool:
    """A model folder that train.py did not write (``hope.hf`` save_pretrained, copied files): no manifest."""
    return (path / "model.safetensors").is_file() and not (path / "manifest.json").exists() \
        and not STEP_DIR.match(path.name)


def _model_dir(path: str | Path) -> Path:
    """An exported model folder as it is, else the checkpoint :func:`resolve_checkpoint` finds (unverified)."""
    path = Path(path).expanduser()
    return path if _is_exported(path) else resolve_checkpoint(path)


def model_folder(path: str | Path) -> Path:
    """The folder holding the model of ``path``: a checkpoint (manifest verified for the model files), the
    latest checkpoint of a run directory, or any folder with ``model.safetensors`` + ``config.json``."""
    folder = _model_dir(path)
    if not _is_exported(folder):
        verify_checkpoint(folder, files=("model.safetensors", "config.json"))
    return folder


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[HopeConfig, HopeLM]:
    """``(HopeConfig, HopeLM)`` from a checkpoint directory, a run directory (its latest checkpoint) or a
    ``hope.hf`` / exported folder (see :func:`model_folder`); in eval mode on ``device``."""
    folder = model_folder(path)
    cfg = read_model_config(folder)
    model = HopeLM(cfg)
    load_model_weights(model, folder / "model.safetensors")
    return cfg, model.to(device).eval()


def recorded_tokenizer(path: str | Path) -> Tokenizer | None:
    """The tokenizer a model folder records: its saved copy (``hope_tokenizer.json``), else the spec in
    ``train_config.json`` (checkpoints written before tokenizers were saved), else None."""
    folder = _model_dir(path)
    if not _is_exported(folder):  # the tokenizer files only (the weights are verified when loaded)
        verify_checkpoint(folder, files=(SPEC_FILE, "tokenizer.json", "tokenizer_config.json", "train_config.json"))
    tok = load_saved(folder)
    if tok is None and (folder / "train_config.json").is_file():
        spec = json.loads((folder / "train_config.json").read_text()).get("tokenizer")
        tok = build_tokenizer(spec) if spec else None
    return tok


def load_tokenizer(path: str | Path, spec: str | None = None, allow_mismatch: bool = False) -> Tokenizer:
    """The tokenizer to evaluate the model at ``path`` with: the one it was trained with. ``spec`` (a
    tokenizer spec given by the user) must map text to the same ids (equal fingerprints) unless
    ``allow_mismatch``; a folder that records no tokenizer needs ``spec``."""
    recorded = recorded_tokenizer(path)
    if spec is None:
        if recorded is None:
            raise CheckpointError(f"{path} records no tokenizer: pass the one the model was trained with "
                                  "(--tokenizer byte, or a tokenizer.json path)")
        return recorded
    given = build_tokenizer(spec)
    if recorded is not None and given.fingerprint() != recorded.fingerprint() and not allow_mismatch:
        raise CheckpointError(f"tokenizer {spec!r} differs from the one {path} was trained with "
                              f"({recorded.name!r}); drop --tokenizer to use the recorded one, or pass "
                              "--allow-tokenizer-mismatch to evaluate with another tokenizer anyway")
    return given


# ----------------------------------------------------------------------------- training state
def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def save_checkpoint(root: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    model_cfg: HopeConfig, train_cfg: dict[str, Any], train_state: dict[str, Any],
                    sharded: bool = False, rank: int = 0, keep_last: int = 2,
                    tokenizer: Tokenizer | None = None) -> Path:
    """Write ``<root>/step_<step>`` atomically (every process calls this); returns its path.

    ``model`` is the unwrapped HopeLM (FSDP2 modules are sharded in place). ``sharded``: save model and
    optimizer with torch.distributed.checkpoint (FSDP2) and gather the full weights for model.safetensors.
    ``tokenizer``: saved beside the model, so evaluation uses exactly the run's tokenizer.
    """
    root = Path(root)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-{final.name}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    if sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_state_dict,
        )

        msd, osd = get_state_dict(model, optimizer)
        dcp.save({"model": msd, "optimizer": osd}, checkpoint_id=str(tmp / "sharded"))
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        full = model.state_dict() if rank == 0 else {}
    torch.save(_rng_state(), tmp / f"rng_rank{rank}.pt")
    if rank == 0:
        save_model_file(full, tmp / "model.safetensors")
        if not sharded:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "config.json").write_text(json.dumps(model_cfg.to_dict(), indent=2))
        (tmp / "train_config.json").write_text(json.dumps(train_cfg, indent=2))
        (tmp / "train_state.json").write_text(json.dumps({**train_state, "step": step}, indent=2))
        if tokenizer is not None:
            tokenizer.save(tmp)
    _barrier()
    if rank == 0:
        write_manifest(tmp)
        if final.exists():  # re-saving a step (e.g. the end of a resumed run that had already ended)
            trash = root / f".old-{final.name}"
            shutil.rmtree(trash, ignore_errors=True)
            final.rename(trash)
            shutil.rmtree(trash)
        tmp.rename(final)
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def check_compatible(ckpt: Path, model_cfg: HopeConfig, train_cfg: dict[str, Any]) -> list[str]:
    """Raise :class:`CheckpointError` when ``ckpt`` was written for another model, tokenizer or data;
    return the names of other train settings that changed (allowed, e.g. max_steps)."""
    saved = json.loads((ckpt / "config.json").read_text())
    current = model_cfg.to_dict()
    diff = [f"{k}: {saved.get(k)!r} in the checkpoint, {current.get(k)!r} now"
            for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k) and k != "name"]
    if diff:
        raise CheckpointError(f"checkpoint {ckpt} was written for another model config: " + "; ".join(diff))
    saved_train = json.loads((ckpt / "train_config.json").read_text())
    diff = [f"{k}: {saved_train.get(k)!r} in the checkpoint, {train_cfg.get(k)!r} now"
            for k in MUST_MATCH if saved_train.get(k) != train_cfg.get(k)]
    if diff:
        raise CheckpointError(f"checkpoint {ckpt} was written for other data: " + "; ".join(diff))
    return [k for k in sorted(train_cfg) if saved_train.get(k) != train_cfg.get(k) and k not in ("resume",)]


def load_checkpoint(ckpt: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    model_cfg: HopeConfig, train_cfg: dict[str, Any], sharded: bool = False, rank: int = 0,
                    device: str | torch.device = "cpu") -> tuple[dict[str, Any], list[str]]:
    """Restore model, optimizer and RNG from ``ckpt`` (every process calls this).

    Returns ``(train_state, changed train settings)``. Verifies the manifest and the configs first.
    """
    ckpt = verify_checkpoint(resolve_checkpoint(ckpt))
    changed = check_compatible(ckpt, model_cfg, train_cfg)
    has_shards = (ckpt / "sharded").is_dir()
    if sharded or has_shards:
        if not has_shards:
            raise CheckpointError(f"checkpoint {ckpt} was written without FSDP (optimizer.pt); resume it "
                                  "with parallel=none or ddp")
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        msd, osd = get_state_dict(model, optimizer)
        state = {"model": msd, "optimizer": osd}
        dcp.load(state, checkpoint_id=str(ckpt / "sharded"), no_dist=not sharded)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    else:
        load_model_weights(model, ckpt / "model.safetensors")
        try:
            state = torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=True)
            optimizer.load_state_dict(state)
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{ckpt}/optimizer.pt does not fit this optimizer ({e}); was it written "
                                  "with another optimizer setting?") from None
    rng = ckpt / f"rng_rank{rank}.pt"
    if rng.is_file():
        _set_rng_state(torch.load(rng, weights_only=True))
    return json.loads((ckpt / "train_state.json").read_text()), changed
